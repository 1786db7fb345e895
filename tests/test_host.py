"""mlp_cli.host: free memory capped by the process's cgroup, and the torchrun ranks that share a node."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlp_cli import host


def cgroup_tree(tmp_path: Path, files: dict[str, str], membership: str) -> tuple[str, str]:
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "cgroup").write_text(membership)
    return str(tmp_path / "fs"), str(tmp_path / "cgroup")


def test_v2_room_is_the_least_over_the_cgroup_and_its_ancestors(tmp_path):
    root, membership = cgroup_tree(tmp_path, {
        "memory.max": "max\n", "memory.current": "5000\n",  # the root: no limit
        "job/memory.max": "1000\n", "job/memory.current": "400\n",  # 600 left
        "job/step/memory.max": "900\n", "job/step/memory.current": "100\n",  # 800 left, but the job has 600
    }, "0::/job/step\n")
    assert host._cgroup_room(root, membership) == 600


def test_v1_memory_controller_and_its_no_limit_number(tmp_path):
    huge = str(9223372036854771712)
    root, membership = cgroup_tree(tmp_path, {
        "memory/memory.limit_in_bytes": huge, "memory/memory.usage_in_bytes": "7",
        "memory/box/memory.limit_in_bytes": "2048", "memory/box/memory.usage_in_bytes": "2100",  # over: 0 left
    }, "4:memory:/box\n3:cpuset:/\n")
    assert host._cgroup_room(root, membership) == 0
    root, membership = cgroup_tree(tmp_path / "b", {"memory/memory.limit_in_bytes": huge, "memory/memory.usage_in_bytes": "7"},
                                   "4:memory:/\n")
    assert host._cgroup_room(root, membership) is None


def test_no_cgroup_information_means_no_cap(tmp_path):
    assert host._cgroup_room(str(tmp_path), str(tmp_path / "absent")) is None


@pytest.mark.parametrize("meminfo,room,expected", [(8000, 600, 600), (8000, None, 8000), (None, 600, 600), (None, None, None)])
def test_available_bytes_is_the_smaller_of_free_memory_and_cgroup_room(monkeypatch, meminfo, room, expected):
    monkeypatch.setattr(host, "_meminfo_available", lambda: meminfo)
    monkeypatch.setattr(host, "_cgroup_room", lambda: room)
    assert host.available_bytes() == expected


@pytest.mark.parametrize("value,ranks", [(None, 1), ("4", 4), ("", 1), ("x", 1), ("0", 1)])
def test_ranks_on_this_node(monkeypatch, value, ranks):
    if value is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", value)
    assert host.ranks_on_this_node() == ranks
