"""What the exec tests read from the machine: cgroups and processes, from /proc and /sys."""
import os


def _mounts():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields, (fstype, _src, opts) = left.split(), right.split()[:3]
            yield fields[3], fields[4], fstype, opts.split(",")


def controller_dir(pid, ctl):
    """The directory of pid's cgroup that carries controller ctl, or None."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [ln.rstrip("\n").split(":", 2) for ln in f]
    v2 = None
    for root, point, fstype, opts in _mounts():
        if fstype == "cgroup" and ctl in opts:
            for _id, ctls, path in lines:
                if ctl in ctls.split(","):
                    return point + path[len(root.rstrip("/")):]
        if fstype == "cgroup2":
            v2 = (point, root)
    for _id, ctls, path in lines:
        if not ctls and v2:
            d = v2[0] + path[len(v2[1].rstrip("/")):]
            try:
                if ctl in read(os.path.join(d, "cgroup.controllers")).split():
                    return d
            except OSError:
                pass
    return None


def has_controller(ctl):
    """True when this machine mounts controller ctl (v1) or offers it in the v2 root."""
    for _root, point, fstype, opts in _mounts():
        if fstype == "cgroup" and ctl in opts:
            return True
        if fstype == "cgroup2":
            try:
                with open(os.path.join(point, "cgroup.controllers")) as f:
                    if ctl in f.read().split():
                        return True
            except OSError:
                pass
    return False


def read(path):
    with open(path) as f:
        return f.read()


def marked(marker, cmd=None):
    """Live (non-zombie) processes whose environment holds marker (and whose command line,
    its arguments joined by spaces, starts with cmd), counted from /proc."""
    pids = []
    needle = marker.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle not in f.read():
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                line = f.read().replace(b"\0", b" ").decode(errors="replace")
            if cmd and not line.startswith(cmd):
                continue
            with open(f"/proc/{name}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        pids.append(int(name))
    return pids


def cpu_ticks(pid):
    """utime + stime of pid in clock ticks."""
    fields = read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
