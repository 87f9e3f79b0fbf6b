"""A cluster in a box: test hosts on this machine, each with its own network, processes, /tmp and home.

    box = ClusterBox.create(HOSTS)        # a client ("your machine") and the cluster's hosts
    box.run("client", ["ray", "up", ...])  # a command inside a host, with a clean environment
    box.ssh("head", "ray status")          # from the client, through the head's real sshd
    box.cut("cpu"); box.restore("cpu")     # pull and plug back a host's network cable
    box.close()                            # kills what it started, by pid; removes its folder

Each host is one `unshare --net --pid --mount --uts --fork --kill-child` whose PID 1 is
`host_init.py` (private mounts, hostname, sshd). The hosts' network cards are veth pairs whose other
ends sit on a bridge inside a switch namespace of their own (an `unshare --net` process): addresses in
BOX_NET, no default route, nothing added to the machine's own network namespace, so a box host can
reach only the box. Killing a host's PID 1 ends every process in its PID namespace (so `ray stop` and
`ray down` only ever reach box processes) and frees its network and mount namespaces; every process the
box starts dies with the process that created it (parent-death signal), also when a test run is killed.
"""
from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BOX_NET = "10.88.0"  # /24 on the box's own bridge; never routed anywhere else
PREFIX = "haloc-box-"  # the box's folder: /var/tmp/haloc-box-<pid>-XXXX (not /tmp: each host has its own /tmp)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STORE = "/mnt/haloc-store"  # the shared store folder, at the same path on every cluster host (as an NFS mount)


class BoxError(RuntimeError):
    pass


@dataclass(frozen=True)
class HostSpec:
    name: str  # "client", "head", "asic", "cpu", ...
    octet: int  # address BOX_NET.octet
    offer_only: str | None = None  # HALOC_OFFER_ONLY in the host's ~/.bashrc (workers.detect narrows to it)
    cluster: bool = True  # a cluster host (sshd, venv overlay, store); False: the client, where you type `ray up`
    extra_env: dict = field(default_factory=dict)  # more exports in its ~/.bashrc

    @property
    def address(self) -> str:
        return f"{BOX_NET}.{self.octet}"

    @property
    def hostname(self) -> str:
        return f"box-{self.name}"


def missing_tools() -> list[str]:
    """The programs the box needs that this machine lacks (setup.sh installs them)."""
    need = ["ip", "unshare", "nsenter", "setpriv", "mount", "ssh", "ssh-keygen", "/usr/sbin/sshd", "rsync"]
    return [t for t in need if not shutil.which(t)]


def cannot_create_namespaces() -> str | None:
    """Why this machine cannot host a box (None: it can). Only this is a reason to skip the box's tests."""
    if os.geteuid() != 0:
        return "not root: network, PID and mount namespaces need root"
    for tool in ("ip", "unshare", "nsenter"):
        if not shutil.which(tool):
            return f"no `{tool}` on this machine"
    probe = subprocess.run(["unshare", "--net", "--pid", "--mount", "--uts", "--fork", "--mount-proc", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"namespaces refused here (`unshare --net --pid --mount --uts` said: {probe.stderr.strip()[:200]})"
    return None


def _die_with_me(argv: list[str]) -> list[str]:
    """argv run under a parent-death signal: it is SIGKILLed when the process that started it dies."""
    return ["setpriv", "--pdeathsig", "KILL", *argv]


def _venv_prefix() -> Path:
    """The real folder of the venv running the tests (its scripts' shebangs name that path)."""
    return Path(sys.prefix).resolve()


def _under(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


@dataclass
class Host:
    spec: HostSpec
    dir: Path
    unshare: subprocess.Popen  # in the host's network/mount/UTS namespaces, parent of its PID 1
    init_pid: int = 0  # PID 1 of the host's PID namespace, as this machine numbers it


class ClusterBox:
    def __init__(self, root: Path, specs: list[HostSpec]):
        self.root = root
        self.specs = {s.name: s for s in specs}
        self.hosts: dict[str, Host] = {}
        self.switch: subprocess.Popen | None = None
        self.home = Path(pwd.getpwuid(0).pw_dir)
        self.venv = _venv_prefix()
        self.key = root / "client" / "home" / ".ssh" / "id_ed25519"
        self.started_s = 0.0

    # ---- life cycle ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, specs: list[HostSpec], keep_on_failure: bool = False) -> ClusterBox:
        if missing_tools():
            raise BoxError(f"the cluster box needs {missing_tools()}; install them with `bash scripts/setup.sh` "
                           "(as root it installs openssh-server, rsync and iproute2)")
        _remove_stale_boxes()
        root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir="/var/tmp"))
        box = cls(root, specs)
        started = time.monotonic()
        try:
            box._start()
        except BaseException:
            box.close(keep=keep_on_failure)
            raise
        box.started_s = time.monotonic() - started
        return box

    def _start(self) -> None:
        (self.root / "store").mkdir()
        self.switch = subprocess.Popen(_die_with_me(["unshare", "--net", "--", "sleep", "infinity"]))
        _wait_own_netns(self.switch.pid)
        self._in_switch("ip", "link", "set", "lo", "up")
        self._in_switch("ip", "link", "add", "br0", "type", "bridge")
        self._in_switch("ip", "link", "set", "br0", "up")
        self._make_keys()
        hosts_file = self.root / "hosts"
        hosts_file.write_text("127.0.0.1 localhost\n" + "".join(
            f"{s.address} {s.hostname}\n" for s in self.specs.values()))
        for spec in self.specs.values():
            self._start_host(spec, hosts_file)
        for host in self.hosts.values():
            self._wait_started(host)
        for spec in self.specs.values():
            if spec.cluster:
                self._wait_ssh(spec)

    def close(self, keep: bool = False) -> None:
        """SIGKILL every host's PID 1 (the kernel ends the rest of its namespace) and the switch; remove
        the folder unless `keep` (for a look at the hosts' logs after a failure)."""
        for host in self.hosts.values():
            if host.init_pid:
                _kill(host.init_pid)  # the kernel kills and reaps the rest of its PID namespace
            else:
                _kill(host.unshare.pid)
        for host in self.hosts.values():  # unshare reaps its child, then exits (killing it first leaves a zombie)
            try:
                host.unshare.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill(host.unshare.pid)
                _reap(host.unshare)
        if self.switch is not None:
            _kill(self.switch.pid)
            _reap(self.switch)
        self.hosts.clear()
        if not keep:
            _remove_box_folder(self.root)

    # ---- hosts --------------------------------------------------------------------------------------

    def _make_keys(self) -> None:
        self.key.parent.mkdir(parents=True)
        _check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "haloc-box", "-f", str(self.key)])
        (self.root / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())

    def _start_host(self, spec: HostSpec, hosts_file: Path) -> None:
        d = self.root / spec.name
        for sub in ("home", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        cfg = {"hostname": spec.hostname, "home": str(d / "home"), "tmp": str(d / "tmp"),
               "hosts_file": str(hosts_file), "ready_file": str(d / "net-ready"), "started_file": str(d / "started"),
               "keep_in_home": self._keep_in_home(spec)}
        if spec.cluster:
            cfg.update(self._cluster_host_files(spec, d))
        (d / "init.json").write_text(json.dumps(cfg, indent=1))
        argv = ["unshare", "--net", "--pid", "--mount", "--uts", "--fork", "--kill-child", "--mount-proc",
                "--propagation", "private", "--", sys.executable, "-I", "-S", str(HERE / "host_init.py"),
                str(d / "init.json")]
        with open(d / "init.log", "ab") as log:
            proc = subprocess.Popen(_die_with_me(argv), stdout=log, stderr=log)
        self.hosts[spec.name] = host = Host(spec, d, proc)
        host.init_pid = _wait_child(proc, d / "init.log")  # forked after unshare(2): the namespaces exist
        self._plug_in(host)
        (d / "net-ready").write_text("")

    def _keep_in_home(self, spec: HostSpec) -> list[str]:
        """Paths under root's home that must stay visible in the host's private home."""
        keep = [Path(sys.base_prefix).resolve()]  # the Python the venv links to (e.g. ~/.pyenv/versions/3.11.7)
        if not spec.cluster:  # the client works in the repository, with the machine's venv
            keep += [ROOT, self.venv]
        keep = [p for p in keep if _under(p, self.home)]
        return [str(p) for p in keep if not any(_under(p, q) and p != q for q in keep)]

    def _cluster_host_files(self, spec: HostSpec, d: Path) -> dict:
        (d / "venv-upper").mkdir()
        (d / "venv-work").mkdir()
        (d / "venv").mkdir()
        host_key = d / "ssh_host_ed25519_key"
        _check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", spec.hostname, "-f", str(host_key)])
        (d / "sshd_config").write_text("\n".join([
            f"ListenAddress {spec.address}",  # the box address only, never the machine's
            "Port 22", f"HostKey {host_key}", "PidFile none", f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "UseDNS no", "PrintMotd no", "MaxSessions 64", "MaxStartups 64:30:128",
            "Subsystem sftp internal-sftp", "LogLevel INFO", ""]))
        self._write_site_settings(spec, d / "home")
        project = self.home / "haloc-ray"  # the cluster file's file_mounts target, ~/haloc-ray
        return {"sshd_config": str(d / "sshd_config"), "sshd_log": str(d / "sshd.log"),
                "store": {"source": str(self.root / "store"), "target": STORE},
                "venv_overlay": {"lower": str(self.venv), "upper": str(d / "venv-upper"), "work": str(d / "venv-work"),
                                 "staging": str(d / "venv"), "targets": [str(self.venv), str(project / ".venv")]}}

    def _write_site_settings(self, spec: HostSpec, home: Path) -> None:
        """What a site's own hosts would carry: which hardware to offer, an offline package mirror, limits."""
        lines = ["# this box host's own settings (tests/cluster_box), as a site's ~/.bashrc holds them"]
        if spec.offer_only is not None:
            lines.append(f"export HALOC_OFFER_ONLY={shlex.quote(spec.offer_only)}")
        # the box shares one machine: a modest object store per node
        lines.append(f"export RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES={256 * 1024 * 1024}")
        lines += [f"export {k}={shlex.quote(str(v))}" for k, v in spec.extra_env.items()]
        (home / ".bashrc").write_text("\n".join(lines) + "\n")
        # No package index inside the box: pip finds everything installed already (the venv overlay); no
        # build isolation, whose fresh environment would need setuptools from an index. (pip's config
        # inverts this flag: `no-build-isolation = false` turns isolation off.)
        pip = home / ".config" / "pip"
        pip.mkdir(parents=True)
        (pip / "pip.conf").write_text("[global]\nno-index = true\ndisable-pip-version-check = true\n"
                                      "[install]\nno-build-isolation = false\n")

    def _plug_in(self, host: Host) -> None:
        """A veth 'cable' from the host's eth0 to the switch's bridge, and the host's address on it."""
        s, pid = host.spec, host.init_pid
        _wait_own_netns(pid)
        port = f"p-{s.name}"[:15]
        self._in_switch("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", str(pid))
        self._in_switch("ip", "link", "set", port, "master", "br0", "up")
        for args in (["link", "set", "lo", "up"], ["addr", "add", f"{s.address}/24", "dev", "eth0"],
                     ["link", "set", "eth0", "up"]):
            _check(["nsenter", "-t", str(pid), "-n", "ip", *args])

    def _wait_started(self, host: Host, timeout_s: float = 60) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if host.unshare.poll() is not None:
                raise BoxError(f"box host {host.spec.name} exited at start (code {host.unshare.returncode}): "
                               + _tail(host.dir / "init.log"))
            if (host.dir / "started").exists():
                return
            time.sleep(0.05)
        raise BoxError(f"box host {host.spec.name} did not start within {timeout_s} s: " + _tail(host.dir / "init.log"))

    def _wait_ssh(self, spec: HostSpec, timeout_s: float = 60) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            out = self.ssh(spec.name, "true", timeout=20, check=False)
            if out.returncode == 0:
                return
            time.sleep(0.2)
        raise BoxError(f"no ssh login to box host {spec.name} within {timeout_s} s: {out.stderr[-500:]} "
                       + _tail(self.hosts[spec.name].dir / "sshd.log"))

    def _in_switch(self, *argv: str) -> None:
        _wait_own_netns(self.switch.pid)  # never run `ip` in this machine's own network namespace
        _check(["nsenter", "-t", str(self.switch.pid), "-n", *argv])

    # ---- using the hosts ----------------------------------------------------------------------------

    def env(self, host: str, **extra) -> dict:
        """A login-like environment for a command in `host`; the client has the machine's venv activated."""
        env = {"HOME": str(self.home), "USER": "root", "LANG": "C.UTF-8", "PATH": SYSTEM_PATH}
        if not self.specs[host].cluster:
            env.update(PATH=f"{self.venv}/bin:{SYSTEM_PATH}", VIRTUAL_ENV=str(self.venv))
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def command(self, host: str, argv: list[str], cwd: str | Path = "/", env: dict | None = None) -> list[str]:
        """argv run inside `host`'s namespaces with a clean environment (nothing of this process's leaks in)."""
        pid = self.hosts[host].init_pid
        environ = [f"{k}={v}" for k, v in (env or self.env(host)).items()]
        return ["nsenter", "-t", str(pid), "-m", "-u", "-n", "-p", f"--wd={cwd}", "--", "env", "-i", *environ, *argv]

    def run(self, host: str, argv: list[str], *, cwd: str | Path = "/", env: dict | None = None,
            timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        proc = self.popen(host, argv, cwd=cwd, env=env)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out, err = proc.communicate()
            raise BoxError(f"{host}: {shlex.join(argv)} ran past {timeout} s\n{out[-3000:]}\n{err[-3000:]}") from None
        result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and result.returncode != 0:
            raise BoxError(f"{host}: {shlex.join(argv)} exited {result.returncode}\n"
                           f"--- stdout\n{out[-4000:]}\n--- stderr\n{err[-4000:]}")
        return result

    def popen(self, host: str, argv: list[str], *, cwd: str | Path = "/", env: dict | None = None,
              log: Path | None = None) -> subprocess.Popen:
        """A command in `host`, in a process group of its own (a timeout kills the whole group)."""
        if log is not None:
            with open(log, "ab") as out:
                return subprocess.Popen(self.command(host, argv, cwd, env), stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        return subprocess.Popen(self.command(host, argv, cwd, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True)

    def ssh_argv(self, host: str, command: str, connect_timeout_s: int = 10) -> list[str]:
        """`ssh root@HOST command`, as typed on the client (the box's key, the box address)."""
        return ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", f"ConnectTimeout={connect_timeout_s}", f"root@{self.specs[host].address}", command]

    def ssh(self, host: str, command: str, *, timeout: float = 600, check: bool = True,
            connect_timeout_s: int = 10) -> subprocess.CompletedProcess:
        """`command` in a shell on `host`, reached from the client over ssh."""
        return self.run("client", self.ssh_argv(host, command, connect_timeout_s), timeout=timeout, check=check)

    def cut(self, host: str) -> None:
        """Pull the host's network cable: its port on the switch goes down (the host sees NO-CARRIER)."""
        self._in_switch("ip", "link", "set", f"p-{host}"[:15], "down")

    def restore(self, host: str) -> None:
        self._in_switch("ip", "link", "set", f"p-{host}"[:15], "up")

    def processes(self, host: str) -> dict[int, str]:
        """{pid (as this machine numbers it): command line} of every process in the host's PID namespace."""
        init = self.hosts[host].init_pid
        try:
            ns = os.readlink(f"/proc/{init}/ns/pid")
        except OSError:
            return {}
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                        errors="replace").strip()
            except OSError:
                continue
        return found

    def host_path(self, host: str, path: str) -> Path:
        """Where a file of the host's private /tmp or home lies on this machine (for reading logs)."""
        p = Path(path)
        d = self.hosts[host].dir
        if _under(p, Path("/tmp")):
            return d / "tmp" / p.relative_to("/tmp")
        if _under(p, self.home):
            return d / "home" / p.relative_to(self.home)
        if _under(p, Path(STORE)):
            return self.root / "store" / p.relative_to(STORE)
        raise ValueError(f"{path} is neither in a host's /tmp, its home nor the store")


# ---- process and folder helpers ---------------------------------------------------------------------

def _check(argv: list[str]) -> None:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise BoxError(f"{shlex.join(argv)} failed ({out.returncode}): {out.stderr.strip()[-800:]}")


def _wait_child(proc: subprocess.Popen, log: Path, timeout_s: float = 30) -> int:
    """The pid of the first child of `proc` (unshare's PID 1 of the new namespace)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise BoxError(f"unshare exited with {proc.returncode}: {_tail(log)}")
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise BoxError(f"unshare {proc.pid} started no namespace within {timeout_s} s")


def _wait_own_netns(pid: int, timeout_s: float = 30) -> None:
    """Until `pid` is in a network namespace other than this process's."""
    ours = os.readlink("/proc/self/ns/net")
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != ours:
                return
        except OSError as e:
            raise BoxError(f"box process {pid} is gone") from e
        time.sleep(0.01)
    raise BoxError(f"process {pid} did not leave this machine's network namespace within {timeout_s} s")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(proc: subprocess.Popen) -> None:
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise BoxError(f"box process {proc.pid} survived SIGKILL for 30 s") from None


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return f"({path} is empty)"


def _mounted_under(folder: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if _under(Path(point), folder):
            points.append(point)
    return points


def _remove_box_folder(folder: Path) -> None:
    mounted = _mounted_under(folder)
    if mounted:  # never delete through a mount (a bound home or venv): that would delete the real files
        raise BoxError(f"not removing {folder}: {mounted[:3]} still mounted in this namespace")
    shutil.rmtree(folder, ignore_errors=True)


def _remove_stale_boxes() -> None:
    """Folders of earlier boxes whose creating process is gone (a test run that was killed)."""
    for folder in Path("/var/tmp").glob(f"{PREFIX}*"):
        try:
            owner = int(folder.name[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if not Path(f"/proc/{owner}").exists():
            _remove_box_folder(folder)
