"""A real, private one-node SLURM cluster on 127.0.0.1 for integration tests.

Why: the pipeline's SLURM executor can only be trusted against a real ``slurmctld``/``slurmd``
(job states, GRES, cancellation), not a mock. This module starts one from Debian's
``slurm-wlm`` and ``munge`` packages (``tests/install_slurm.sh`` installs them), entirely under
a work directory, with its own munge key and socket and free TCP ports, so several clusters (or
test runs) never clash and nothing in ``/etc`` is touched.

Usage::

    with SlurmCluster(tmp_path) as cluster:
        job = cluster.sbatch("--wrap", "hostname")
        assert cluster.wait_for(job) == "COMPLETED"
        subprocess.run(["squeue"], env=cluster.env)   # clients find the cluster via SLURM_CONF

Known constraints (each one bit us; see the comments where they are handled):

* there is no ``slurmdbd``, so ``sacct`` does not work: use ``squeue --states=all`` (jobs stay
  visible for ``MinJobAge`` seconds after they end) or ``scontrol show job``;
* the fake GPU is ``File=/dev/null`` in gres.conf with ``AutoDetect=off``;
* the node's layout and memory are copied from ``slurmd -C``, else the node is drained;
* ``MailProg=/bin/true``, since there is no mailer;
* ``proctrack/linuxproc`` may leak a process of a job cancelled within milliseconds of its
  start (see the comment in slurm.conf), so :meth:`stop` kills stray job processes of this
  cluster, found by ``SLURM_CONF`` + ``SLURM_JOB_ID`` in their environment;
* a job's ``TRES`` (scontrol show job) never lists the GPU: that needs
  ``AccountingStorageTRES=gres/gpu``, which is fatal without slurmdbd. The GPU shows in
  ``JOB_GRES=gpu:1`` (``scontrol show job -d``, kept after the job ends), ``GRES=gpu:1(IDX:0)``
  while it runs, and ``TresPerNode``/``TresPerJob`` (the ``--gres``/``--gpus`` request);
* munged refuses a socket whose directory (or any parent) is not searchable by everybody, and
  pytest's tmp dirs are 0700: it is run with ``--force``, which turns that into a warning
  (harmless here: every client and daemon runs as root);
* without ``DefMemPerCPU`` a job with no ``--mem`` gets the whole node's memory under
  ``CR_Core_Memory``, so jobs would run one at a time.

Harmless noise: ``mpi/pmix ... can not load PMIx library`` errors in the slurm logs and
``Unauthorized credential for client UID=0`` in munged's log. A slurmstepd daemonizes, so once
its job ends it may linger briefly as a ``<defunct>`` zombie of PID 1 (nothing left running).

Needs root (SlurmUser=root, the daemons run as the current user).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

#: Debian installs the daemons in /usr/sbin, which a non-login PATH may lack.
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_DAEMONS = ("munged", "slurmctld", "slurmd")
_CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel")

#: Job states after which a job will not change any more.
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)

_SHOW_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w:/.\-]*)=(.*?)(?=\s[A-Za-z][\w:/.\-]*=|\s*$)")


def _which(name: str) -> str | None:
    """``shutil.which`` that also looks in the sbin directories."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    return shutil.which(name, path=path)


def _free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (tiny race, fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join("  " + line for line in text[-lines:]) or "  (empty)"


class SlurmCluster:
    """One ``munged`` + ``slurmctld`` + ``slurmd`` on 127.0.0.1, all state under ``workdir``.

    The daemons run in the foreground (``-D``/``-F``) as children of this process, so the PIDs
    recorded in :attr:`pids` are exactly the processes to stop; nothing is ever killed by name.
    """

    NODE = "localhost"
    PARTITION = "debug"

    def __init__(self, workdir: Path, *, name: str = "casebook", start_timeout: float = 60.0):
        self.workdir = Path(workdir).resolve()
        self.name = name
        self.start_timeout = start_timeout
        self.conf = self.workdir / "slurm.conf"
        self.logdir = self.workdir / "log"
        self.munge_dir = self.workdir / "munge"
        self.munge_socket = self.munge_dir / "munge.sock"
        self._procs: dict[str, subprocess.Popen] = {}
        self._logs: list = []  # open log files of the daemons
        # Clients find the cluster through SLURM_CONF. Inherited SLURM_* variables (e.g. when
        # the tests themselves run inside a SLURM job) would redirect or confuse them: drop them.
        self.env: dict[str, str] = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SQUEUE_"))}
        self.env["SLURM_CONF"] = str(self.conf)
        # Snakemake's jobstep executor strips every SLURM_* variable (SLURM_CONF included)
        # before its nested srun, which then looks for /etc/slurm/slurm.conf: wrappers that
        # set SLURM_CONF, first on PATH, keep this private cluster out of /etc.
        self.bin_dir = self.workdir / "bin"
        self.env["PATH"] = os.pathsep.join([str(self.bin_dir), self.env.get("PATH", ""), *_SBIN])

    # ------------------------------------------------------------------ availability
    @staticmethod
    def why_unavailable() -> str | None:
        """Why a cluster cannot be started here (None when it can): for ``pytest.skip``."""
        missing = [b for b in (*_DAEMONS, *_CLIENTS) if _which(b) is None]
        if missing:
            return f"SLURM/munge not installed (missing {', '.join(missing)}); run tests/install_slurm.sh"
        if os.geteuid() != 0:
            return "a private SLURM cluster needs root (SlurmUser=root)"
        return None

    @classmethod
    def available(cls) -> bool:
        """True when the binaries exist and we can run them (as root)."""
        return cls.why_unavailable() is None

    # ------------------------------------------------------------------ configuration
    @staticmethod
    def node_hardware() -> dict[str, str]:
        """The node layout from ``slurmd -C``; spelled out in slurm.conf or the node drains."""
        out = subprocess.run([_which("slurmd") or "slurmd", "-C"], capture_output=True, text=True, check=True).stdout
        fields = dict(kv.split("=", 1) for kv in out.splitlines()[0].split() if "=" in kv)
        return {k: fields[k] for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")}

    def write_client_wrappers(self) -> None:
        """``bin/<client>``: the real SLURM client, always pointed at this cluster's config."""
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        for name in dict.fromkeys((*_CLIENTS, "srun", "sacct")):
            real = _which(name)
            if real is None:
                continue
            wrapper = self.bin_dir / name
            wrapper.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{real}" "$@"\n')
            wrapper.chmod(0o755)

    def write_config(self) -> None:
        """Write slurm.conf, gres.conf, the munge key and the state/spool/log dirs."""
        self.write_client_wrappers()
        for d in ("state", "spool", "log", "run", "munge"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        # munged wants its dirs not writable by group/other and a key owned by its user, 0400.
        self.munge_dir.chmod(0o700)
        key = self.munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        if len(str(self.munge_socket)) > 100:  # sun_path is 108 bytes
            raise ValueError(f"workdir too long for a unix socket: {self.munge_socket}")

        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = _free_port()
        hw = self.node_hardware()
        w = self.workdir
        self.conf.write_text(f"""\
# Generated by tests/slurm_cluster.py: a private one-node cluster, do not use elsewhere.
ClusterName={self.name}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Our own munged; used by both the auth and the cred plugins.
AuthInfo=socket={self.munge_socket}
StateSaveLocation={w}/state
SlurmdSpoolDir={w}/spool
SlurmctldPidFile={w}/run/slurmctld.pid
SlurmdPidFile={w}/run/slurmd.pid
SlurmctldLogFile={w}/log/slurmctld.log
SlurmdLogFile={w}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: find a job's processes by parentage. Its flaw: a child being
# forked while a job is cancelled (within ms of its start) is missed and survives as an orphan
# of PID 1; stop() kills such strays. Not proctrack/pgid: it waits for the job's process group
# to be empty, zombies included, and orphans are reaped by PID 1, which in containers may be
# slow (seconds: job stuck COMPLETING) or never (slurmd: "Kill task failed", node drained).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without it a job with no --mem takes the whole node's memory and jobs serialize.
DefMemPerCPU=100
# No slurmdbd: no accounting, so `sacct` fails; use squeue (see MinJobAge) / scontrol.
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
# Keep finished jobs in squeue for an hour: status checks without sacct rely on that,
# and so do the tests that read a cancelled job's state after the run.
MinJobAge=3600
ReturnToService=2
KillWait=5
# Start batch jobs on the next scheduler pass (~1 s), not up to 3 s later.
SchedulerParameters=batch_sched_delay=0
SlurmdTimeout=30
GresTypes=gpu
NodeName={self.NODE} NodeAddr=127.0.0.1 CPUs={hw["CPUs"]} Boards={hw["Boards"]} \
SocketsPerBoard={hw["SocketsPerBoard"]} CoresPerSocket={hw["CoresPerSocket"]} \
ThreadsPerCore={hw["ThreadsPerCore"]} RealMemory={hw["RealMemory"]} Gres=gpu:1 State=UNKNOWN
PartitionName={self.PARTITION} Nodes={self.NODE} Default=YES MaxTime=INFINITE State=UP
""")
        # A fake GPU: any existing file will do, autodetection (NVML) must be off.
        (w / "gres.conf").write_text("AutoDetect=off\nName=gpu File=/dev/null Count=1\n")

    # ------------------------------------------------------------------ lifecycle
    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the daemons this object started, by daemon name."""
        return {name: p.pid for name, p in self._procs.items()}

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.logdir / f"{name}.out", "ab")
        self._logs.append(log)
        self._procs[name] = subprocess.Popen(
            [_which(name) or name, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.workdir,
        )

    def _check_running(self) -> None:
        for name, p in self._procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode} during start-up")

    def start(self) -> "SlurmCluster":
        """Start munged, slurmctld and slurmd; return once the node is idle (or raise)."""
        if self._procs:
            raise RuntimeError("cluster already started")
        reason = self.why_unavailable()
        if reason:
            raise RuntimeError(reason)
        self.write_config()
        deadline = time.monotonic() + self.start_timeout
        try:
            m = self.munge_dir
            # -F: stay in the foreground so the PID is ours. --force: accept a socket dir that
            # is not searchable by all (pytest tmp dirs are 0700) and running as root.
            self._spawn(
                "munged",
                "-F",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={m / 'munge.key'}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={self.logdir / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            )
            while not self.munge_socket.exists():
                self._check_running()
                if time.monotonic() > deadline:
                    raise TimeoutError("munged did not create its socket")
                time.sleep(0.05)
            self._spawn("slurmctld", "-D", "-f", str(self.conf))
            # -N: the node's name is "localhost", not this machine's hostname.
            self._spawn("slurmd", "-D", "-f", str(self.conf), "-N", self.NODE)
            state = ""
            while state != "idle":
                time.sleep(0.25)
                self._check_running()  # before sinfo, which hangs ~10 s on a dead slurmctld
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node not idle after {self.start_timeout:.0f} s (sinfo: {state!r})")
                r = self.run("sinfo", "-h", "-n", self.NODE, "-o", "%T", check=False, timeout=10)
                state = r.stdout.strip().rstrip("*~#$@+^-")  # drop state suffixes
        except Exception as exc:
            logs = self.log_tails()
            self.stop()
            raise RuntimeError(f"SLURM cluster in {self.workdir} failed to start: {exc}\n{logs}") from exc
        return self

    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every daemon log, for error messages."""
        names = sorted({*self.logdir.glob("*.log"), *self.logdir.glob("*.out")})
        return "\n".join(f"--- {p.name}:\n{_tail(p, lines)}" for p in names)

    def cancel_all(self, timeout: float = 20.0) -> None:
        """scancel every job of this cluster and wait until none is pending/running/completing,
        so that no slurmstepd (started by slurmd, not by us) outlives the cluster."""
        deadline = time.monotonic() + timeout
        # Plain squeue lists only the jobs not finished yet.
        ids = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).stdout.split()
        if ids:
            self.run("scancel", *ids, check=False, timeout=10)
        while ids and time.monotonic() < deadline:
            left = self.run("squeue", "-h", "-t", "PD,CF,R,S,CG,SO", "-o", "%i", check=False, timeout=10)
            if left.returncode == 0 and not left.stdout.strip():
                break
            time.sleep(0.25)
        # Each slurmstepd keeps a socket in the spool dir until it exits: wait for them too.
        while time.monotonic() < deadline and self._step_sockets():
            time.sleep(0.1)

    def stray_job_pids(self) -> list[int]:
        """Processes of this cluster's jobs that outlived them (they escaped proctrack, e.g. by
        setsid): a job's environment has our SLURM_CONF and a SLURM_JOB_ID. Not matched by name,
        and a client run with :attr:`env` (no SLURM_JOB_ID) is not one."""
        conf = f"SLURM_CONF={self.conf}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                env = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if conf in env and any(v.startswith(b"SLURM_JOB_ID=") for v in env):
                found.append(int(proc.name))
        return found

    def _step_sockets(self) -> list[Path]:
        return [p for p in (self.workdir / "spool").glob(f"{self.NODE}_*") if p.is_socket()]

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the jobs left, then end exactly the daemons started here: SIGTERM, wait,
        SIGKILL. Never by name. Safe to call twice (and after a failed start)."""
        if not self._procs:
            return
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            try:
                self.cancel_all()
            except (OSError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):  # reverse start order
            p = self._procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
        self._procs.clear()
        for pid in self.stray_job_pids():  # last resort, once slurmd cannot start new ones
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ client helpers
    def run(self, *cmd: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster (text output captured)."""
        r = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def sbatch(self, *args: str) -> int:
        """Submit with ``sbatch --parsable``; return the job id."""
        out = self.run("sbatch", "--parsable", *args).stdout.strip()
        return int(out.split(";")[0])

    def squeue(self) -> list[dict[str, str]]:
        """All jobs still known to slurmctld, finished ones included (``--states=all``)."""
        keys = ("job_id", "name", "state", "reason", "nodes")
        out = self.run("squeue", "-h", "--states=all", "-o", "%i|%j|%T|%r|%N").stdout
        return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]

    def scontrol_show_job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job -d -o`` parsed into {field: value} (values may contain '=').

        ``-d`` adds the per-node details, among them ``JOB_GRES`` and ``GRES``: the only
        places, besides the request in ``TresPerNode``/``TresPerJob``, where the GPU shows
        without slurmdbd. For a multi-node job the per-node fields hold the last node's."""
        out = self.run("scontrol", "show", "job", "-d", "-o", str(job_id)).stdout.strip()
        return {k: v.strip() for k, v in _SHOW_FIELD.findall(out.splitlines()[0])}

    def job_state(self, job_id: int) -> str | None:
        """The job's state (e.g. RUNNING, COMPLETED), None once slurmctld forgot it."""
        r = self.run("squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T", check=False)
        return (r.stdout.strip() or None) if r.returncode == 0 else None

    def wait_for(self, job_id: int, timeout: float = 60.0, states=TERMINAL_STATES) -> str | None:
        """Poll until the job is in one of ``states`` (default: finished) or gone (None).

        Raises TimeoutError with ``scontrol show job`` and the daemon logs otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state is None or state in states:
                return state
            if time.monotonic() > deadline:
                info = self.run("scontrol", "show", "job", str(job_id), check=False).stdout
                raise TimeoutError(f"job {job_id} still {state} after {timeout} s\n{info}\n{self.log_tails(10)}")
            time.sleep(0.2)
