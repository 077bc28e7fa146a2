"""The libvirt test driver's custom node file: one simulated compute host with its own CPUs and memory."""

from __future__ import annotations

from pathlib import Path


def write_test_node_file(path: Path, *, vcpus: int, memory_mb: int) -> str:
    """A test-driver custom node file (its own CPUs and memory); returns its ``test://`` URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<node>\n"
        f"  <cpu><mhz>2000</mhz><model>x86_64</model><active>{vcpus}</active><max>{vcpus}</max>"
        f"<sockets>1</sockets><cores>{vcpus}</cores><threads>1</threads><nodes>1</nodes></cpu>\n"
        f"  <memory>{memory_mb * 1024}</memory>\n"
        "</node>\n"
    )
    return f"test://{path.resolve()}"
