"""One Linux control group per graded submission: its memory, processes and CPU share counted together.

Resource limits (``setrlimit``) count per process: three processes of one submission could each take
the whole memory limit, and a hundred busy ones would crowd out a classmate graded beside it. A
control group counts the submission as a whole: ``JobGroup.create`` makes one below the grader's own
group, with a memory limit (no swap), a process limit and an equal CPU weight, for cgroup v2
(``memory.max``, ``pids.max``, ``cpu.weight``) or v1 (``memory.limit_in_bytes``, ``pids.max``,
``cpu.shares``). The sandbox's first child joins it before anything of the submission runs
(``sandbox.Plan.cgroups``), so everything it starts is counted there, whatever ``setsid`` or
``fork`` it calls; ``kill`` ends them all and ``remove`` deletes the group.

Where the system gives no writable control groups (no root, a container without delegation),
``create`` returns None and a reason; the per-process limits still hold.
"""
import os
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_paths():
    """{controller: this process's group path} from /proc/self/cgroup (v2: the key ``""``)."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _mounted_v1(controller):
    for candidate in (ROOT / controller, *ROOT.glob(f"*{controller}*")):
        if (candidate / "cgroup.procs").is_file() and controller in candidate.name.split(","):
            return candidate
    return None


class JobGroup:
    """The control group(s) of one submission; ``directories`` are joined by writing a pid to their
    ``cgroup.procs``."""

    def __init__(self, directories):
        self.directories = directories

    @classmethod
    def create(cls, name, memory_bytes, processes, cpu_weight=100):
        """Make the group ``name`` with its limits; return ``(group, None)`` or ``(None, reason)``."""
        try:
            own = _own_paths()
        except OSError as exc:
            return None, f"no control groups ({exc.strerror})"
        made = []
        try:
            if (ROOT / "cgroup.controllers").is_file() and "" in own:          # cgroup v2
                parent = ROOT / own[""].lstrip("/")
                wanted = {"memory", "pids", "cpu"}
                if not wanted <= set((parent / "cgroup.subtree_control").read_text().split()):
                    (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
                group = parent / name
                group.mkdir()
                made.append(group)
                (group / "memory.max").write_text(str(memory_bytes))
                if (group / "memory.swap.max").is_file():
                    (group / "memory.swap.max").write_text("0")
                (group / "pids.max").write_text(str(processes))
                (group / "cpu.weight").write_text(str(cpu_weight))
            else:                                                                  # cgroup v1
                settings = {"memory": [("memory.limit_in_bytes", memory_bytes), ("memory.memsw.limit_in_bytes",
                                                                                  memory_bytes)],
                            "pids": [("pids.max", processes)], "cpu": [("cpu.shares", 1024 * cpu_weight // 100)]}
                for controller, files in settings.items():
                    mount = _mounted_v1(controller)
                    if mount is None or controller not in own:
                        raise OSError(0, f"no {controller} controller")
                    group = mount / own[controller].lstrip("/") / name
                    group.mkdir()
                    made.append(group)
                    for file, value in files:
                        if (group / file).is_file():
                            (group / file).write_text(str(value))
        except OSError as exc:
            JobGroup(made).remove()
            return None, f"no control group ({exc.strerror or exc}): memory and process limits count per process"
        return cls(made), None

    def members(self):
        pids = set()
        for directory in self.directories:
            try:
                pids |= {int(p) for p in (directory / "cgroup.procs").read_text().split()}
            except (OSError, ValueError):
                pass
        return pids

    def kill(self, seconds=5.0):
        """SIGKILL every process in the group until none is left (or ``seconds`` pass)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pids = self.members()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.02)

    def remove(self):
        """Kill what is left and delete the group's directories."""
        self.kill()
        for directory in reversed(self.directories):
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:                                # members still exiting
                    time.sleep(0.02)

    def peak_memory(self):
        """The most memory the group held, in bytes (None where the system does not say)."""
        for directory in self.directories:
            for file in ("memory.peak", "memory.max_usage_in_bytes"):
                try:
                    return int((directory / file).read_text())
                except (OSError, ValueError):
                    continue
        return None
