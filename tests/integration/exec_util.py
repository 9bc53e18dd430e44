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


def cgroup_name(exec_dir):
    """berth-<FNV-1a of the exec directory's real path> (see exec.c)."""
    h = 2166136261
    for c in os.path.realpath(exec_dir).encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return "berth-%08x" % h


def cgroup_roots(exec_dir):
    """Where a berthd started by this test keeps its tenants' cgroups, in every hierarchy:
    <mount><our cgroup>/<cgroup_name>."""
    name = cgroup_name(exec_dir)
    with open("/proc/self/cgroup") as f:
        own = [ln.rstrip("\n").split(":", 2) for ln in f]
    roots = []
    for root, point, fstype, opts in _mounts():
        for _id, ctls, path in own:
            if (fstype == "cgroup" and ctls and set(ctls.split(",")) & set(opts)) or \
                    (fstype == "cgroup2" and not ctls):
                d = os.path.join(point + path[len(root.rstrip("/")):], name)
                if os.path.isdir(d):
                    roots.append(d)
    return roots


def remove_cgroups(exec_dir, timeout=5.0):
    """Kills what is left in a test berthd's tenant cgroups and removes them: a test leaves
    nothing behind on the machine."""
    import signal
    import time
    deadline = time.time() + timeout
    for top in cgroup_roots(exec_dir):
        while os.path.isdir(top) and time.time() < deadline:
            for d, _dirs, _files in os.walk(top, topdown=False):
                try:
                    for pid in read(os.path.join(d, "cgroup.procs")).split():
                        os.kill(int(pid), signal.SIGKILL)
                    os.rmdir(d)
                except OSError:
                    pass
            if os.path.isdir(top):
                time.sleep(0.02)


def stop_and_clean(b, mark):
    """Stops berthd (first: a stopped berthd restarts nothing we kill), kills every process
    carrying mark, removes the tenants' cgroups and the directory; returns (exit code, log)."""
    import signal
    rc = b.stop()
    log = b.log()
    for pid in marked(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    remove_cgroups(os.path.join(b.state, "exec"))
    b.cleanup()
    return rc, log
