"""Running the cloud: `aiostack up` (every process under one supervisor), `aiostack run` (one
process), bus credentials, the audit and the chaos driver, client files, the test guest."""
