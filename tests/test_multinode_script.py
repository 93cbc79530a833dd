"""The multi-node part of job.sh, run with bash and stand-ins for srun, scontrol and ip: the
rendezvous endpoint is an ADDRESS of the batch node (its NodeAddr in SLURM, or the profile's
network_interface), every node's torchrun gets its own address and is_host, gloo the
interface holding that address, and a node without a usable address fails the job with one
line naming the node and the fix. The real two-node runs are in tests/test_multinode_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_render import (
    FAKE_APPTAINER,
    ddp_script,
    job,
    make_project,
    read_status,
    render_script,
    run_bash,
    script_env,
)

from jobs.spec import Profile, Resources

# srun: records its argv, then runs the command once per node of $FAKE_NODES, as slurmstepd
# would: SLURMD_NODENAME, SLURM_NODEID and the node's own GPUs set, output in FAKE_OUT/NODE.
FAKE_SRUN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_OUT/srun"
while [[ "$1" == --* ]]; do shift; done
out=$FAKE_OUT
id=0
for node in $FAKE_NODES; do
  mkdir -p "$out/$node"
  SLURMD_NODENAME=$node SLURM_NODEID=$id FAKE_OUT=$out/$node \\
    CUDA_VISIBLE_DEVICES=$((2 * id)),$((2 * id + 1)) "$@" || exit
  id=$((id + 1))
done
"""
# scontrol -o show node NAME: NodeAddr from $FAKE_ADDR_<NAME>; an unknown node fails.
FAKE_SCONTROL = """#!/usr/bin/env bash
if [[ "$1 $2 $3" == "-o show node" ]]; then
  var="FAKE_ADDR_$4"
  if [[ -z "${!var:-}" ]]; then echo "Node $4 not found" >&2; exit 1; fi
  echo "NodeName=$4 Arch=x86_64 CoresPerSocket=1 NodeAddr=${!var} NodeHostName=$4 Port=0"
fi
"""
# ip -o addr show [dev NAME] on node0N: lo, eth0 10.1.0.N, ib0 (IPv6 listed first) 10.2.0.N.
FAKE_IP = """#!/usr/bin/env bash
n=${SLURMD_NODENAME#node0}
lines=("1: lo    inet 127.0.0.1/8 scope host lo\\\\       valid_lft forever"
       "2: eth0    inet 10.1.0.$n/24 brd 10.1.0.255 scope global eth0\\\\       valid_lft forever"
       "3: ib0    inet6 fd00::$n/64 scope global \\\\       valid_lft forever"
       "3: ib0    inet 10.2.0.$n/16 scope global ib0\\\\       valid_lft forever"
       "4: ib1    inet6 fd01::$n/64 scope global \\\\       valid_lft forever")
if [[ "${4:-}" == dev ]]; then
  mapfile -t lines < <(printf '%s\\n' "${lines[@]}" | awk -v dev="$5" '$2 == dev')
  if ((${#lines[@]} == 0)); then echo "Device \\"$5\\" does not exist." >&2; exit 1; fi
fi
printf '%s\\n' "${lines[@]}"
"""
NODES = {"SLURM_JOB_ID": "123456", "SLURM_JOB_NUM_NODES": "2", "SLURMD_NODENAME": "node07",
         "SLURM_JOB_NODELIST": "node[07-08]",
         "FAKE_NODES": "node07 node08", "FAKE_ADDR_node07": "10.1.0.7",
         "FAKE_ADDR_node08": "10.1.0.8"}


@pytest.fixture
def project(tmp_path: Path) -> dict[str, Path]:
    return make_project(tmp_path)


@pytest.fixture
def launchers(tmp_path: Path) -> Path:
    """A directory with fake srun, scontrol and ip, to put first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("ip", FAKE_IP)):
        (bin_dir / name).write_text(text, encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def allocation(paths: dict[str, Path], launchers: Path, **extra: str) -> dict[str, str]:
    """The environment of a batch script on node07 of a 2-node allocation (node07, node08)."""
    return script_env(paths, PATH=f"{launchers}:{os.environ['PATH']}", **{**NODES, **extra})


def node_env(paths: dict[str, Path], node: str) -> dict[str, str]:
    """The variables the fake python saw on `node`."""
    names = ("PET_LOCAL_ADDR", "PET_RDZV_CONF", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
    return {name: (paths["out"] / node / f"env.{name}").read_text() for name in names}


def test_multi_node_script_refuses_plain_bash(project: dict[str, Path], launchers: Path) -> None:
    env = script_env(project, PATH=f"{launchers}:{os.environ['PATH']}")
    result = run_bash(ddp_script(project, "slurm", nodes=2), env)
    assert result.returncode == 2
    assert "needs an sbatch allocation of 2 nodes" in result.stderr
    assert not (project["out"] / "srun").exists()
    status = read_status(project, 0)
    assert (status["state"], status["exit_code"]) == ("FAILED", 2)


def test_nodes_meet_at_the_batch_nodes_address_from_slurm(project: dict[str, Path],
                                                          launchers: Path) -> None:
    result = run_bash(ddp_script(project, "slurm", nodes=2), allocation(project, launchers))
    assert result.returncode == 0, result.stderr
    assert (project["out"] / "srun").read_text().splitlines() == [
        "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=4", "--kill-on-bad-exit=1",
        "bash", "-c", 'node_env "$@"', "node-env",
        str(project["fake"]), "-m", "torch.distributed.run", "--nnodes=2",
        "--nproc-per-node=2", "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        "--shutdown-timeout=300", "--rdzv-backend=c10d", "--rdzv-id=123456",
        "--rdzv-endpoint=10.1.0.7:23456", "-m", "lyricgen", "finetune-llama", "--config",
        str(project["job_dir"] / "config.json"), "--task", "0"]
    assert node_env(project, "node07") == {
        "PET_LOCAL_ADDR": "10.1.0.7", "PET_RDZV_CONF": "is_host=true",
        "GLOO_SOCKET_IFNAME": "eth0", "NCCL_SOCKET_IFNAME": ""}
    assert node_env(project, "node08") == {
        "PET_LOCAL_ADDR": "10.1.0.8", "PET_RDZV_CONF": "is_host=false",
        "GLOO_SOCKET_IFNAME": "eth0", "NCCL_SOCKET_IFNAME": ""}
    assert read_status(project, 0)["state"] == "COMPLETED"


def test_a_node_address_that_is_a_name_is_resolved_once(project: dict[str, Path],
                                                        launchers: Path) -> None:
    """NodeAddr `localhost` (a name this machine resolves): the endpoint is its address; an
    IPv6 one is bracketed for torchrun."""
    resolved = subprocess.run(["getent", "hosts", "localhost"], capture_output=True,
                              text=True, check=True).stdout.split()[0]
    env = allocation(project, launchers, FAKE_ADDR_node07="localhost",
                     GLOO_SOCKET_IFNAME="bond0")
    result = run_bash(ddp_script(project, "slurm", nodes=2), env)
    assert result.returncode == 0, result.stderr
    host = f"[{resolved}]" if ":" in resolved else resolved
    assert f"--rdzv-endpoint={host}:23456" in (project["out"] / "srun").read_text().split()
    assert node_env(project, "node07")["PET_LOCAL_ADDR"] == resolved
    assert node_env(project, "node07")["GLOO_SOCKET_IFNAME"] == "bond0"  # set: kept


@pytest.mark.parametrize(("nodes", "message"), [
    ({"FAKE_ADDR_node07": "node07.invalid"},
     "job.sh: node node07: no address for the torch rendezvous: its NodeAddr 'node07.invalid' "
     "(scontrol show node) does not resolve; set network_interface in the profile to use an "
     "interface's address"),
    ({"SLURMD_NODENAME": "node09", "FAKE_NODES": "node09 node08"},
     "job.sh: node node09: no address for the torch rendezvous: scontrol show node gave no "
     "NodeAddr (Node node09 not found); set network_interface in the profile"),
])
def test_no_address_for_the_batch_node_fails_with_one_line(project: dict[str, Path],
                                                           launchers: Path, nodes: dict,
                                                           message: str) -> None:
    result = run_bash(ddp_script(project, "slurm", nodes=2),
                      allocation(project, launchers, **nodes))
    assert (result.returncode, result.stderr) == (1, message + "\n")
    assert not (project["out"] / "srun").exists()
    assert read_status(project, 0)["state"] == "FAILED"


def test_no_address_for_another_node_fails_that_node(project: dict[str, Path],
                                                      launchers: Path) -> None:
    result = run_bash(ddp_script(project, "slurm", nodes=2),
                      allocation(project, launchers, FAKE_ADDR_node08="node08.invalid"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "job.sh: rendezvous at 10.1.0.7:23456 (node node07) for nodes node[07-08]",
        "job.sh: node node08: no address for the torch rendezvous: its NodeAddr "
        "'node08.invalid' (scontrol show node) does not resolve; set network_interface in the "
        "profile to use an interface's address"]
    assert (project["out"] / "node07" / "argv").exists()
    assert not (project["out"] / "node08" / "argv").exists()


def test_the_profiles_interface_gives_every_address(project: dict[str, Path],
                                                    launchers: Path) -> None:
    """network_interface ib0: IPv4 of ib0 on each node (listed after its IPv6), whatever
    NodeAddr says; the collectives are pointed at ib0 too."""
    script = ddp_script(project, "slurm", nodes=2, network_interface="ib0")
    result = run_bash(script, allocation(project, launchers, FAKE_ADDR_node07="nowhere"))
    assert result.returncode == 0, result.stderr
    assert "--rdzv-endpoint=10.2.0.7:23456" in (project["out"] / "srun").read_text().split()
    assert node_env(project, "node08") == {
        "PET_LOCAL_ADDR": "10.2.0.8", "PET_RDZV_CONF": "is_host=false",
        "GLOO_SOCKET_IFNAME": "ib0", "NCCL_SOCKET_IFNAME": "ib0"}


def test_an_interface_with_only_ipv6_gives_a_bracketed_endpoint(project: dict[str, Path],
                                                                launchers: Path) -> None:
    script = ddp_script(project, "slurm", nodes=2, network_interface="ib1")
    result = run_bash(script, allocation(project, launchers))
    assert result.returncode == 0, result.stderr
    assert "--rdzv-endpoint=[fd01::7]:23456" in (project["out"] / "srun").read_text().split()
    assert node_env(project, "node08")["PET_LOCAL_ADDR"] == "fd01::8"


def test_a_missing_interface_fails_with_one_line(project: dict[str, Path],
                                                 launchers: Path) -> None:
    script = ddp_script(project, "slurm", nodes=2, network_interface="ib9")
    result = run_bash(script, allocation(project, launchers))
    assert (result.returncode, result.stderr) == (
        1, 'job.sh: node node07: no address for the torch rendezvous: ip -o addr show dev '
           'ib9: Device "ib9" does not exist.\n')
    assert read_status(project, 0)["state"] == "FAILED"


def test_multi_node_apptainer_forwards_each_nodes_own_values(project: dict[str, Path],
                                                             launchers: Path) -> None:
    """srun copies the batch node's APPTAINERENV_* to every node; node_env replaces them by
    the node's own GPUs, address and is_host."""
    (launchers / "apptainer").write_text(FAKE_APPTAINER, encoding="utf-8")
    (launchers / "apptainer").chmod(0o755)
    spec = job("finetune", kind="finetune-llama",
               resources=Resources(gpus=2, cpus=4, nodes=2, processes_per_node=2))
    profile = Profile(name="c", executor="slurm", runtime="apptainer", image="/images/l.sif")
    script = project["job_dir"] / "job.sh"
    script.parent.mkdir(parents=True)
    script.write_text(render_script(spec, profile, job_dir=project["job_dir"],
                                    project_dir=project["project"]), encoding="utf-8")
    result = run_bash(script, allocation(project, launchers, SLURM_JOB_ID="42",
                                         CUDA_VISIBLE_DEVICES="0,1"))
    assert result.returncode == 0, result.stderr
    forwarded = (project["out"] / "node08" / "forwarded").read_text().splitlines()
    assert {"APPTAINERENV_CUDA_VISIBLE_DEVICES=2,3", "APPTAINERENV_PET_LOCAL_ADDR=10.1.0.8",
            "APPTAINERENV_PET_RDZV_CONF=is_host=false",
            "APPTAINERENV_GLOO_SOCKET_IFNAME=eth0"} <= set(forwarded)
    argv = (project["out"] / "node08" / "argv").read_text().splitlines()
    assert argv[:2] == ["exec", "--nv"] and "--rdzv-endpoint=10.1.0.7:20042" in argv
