"""Running the cloud: `aiostack up` (every process under one supervisor), `aiostack run` (one
process), bus credentials, the audit, the chaos and contract (schemathesis) drivers, client
files, the test guest, and the handler tables of docs/ARCHITECTURE.md."""
