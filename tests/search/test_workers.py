"""Several workers on one study: a real PostgreSQL server (started here), and DDP on CPU."""
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from tests.search.test_plan import spec_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL cluster on loopback (Debian's package; `make test` installs it)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    pg_ctl = bins[-1] if bins else shutil.which("pg_ctl")
    if not pg_ctl:
        pytest.skip("PostgreSQL is not installed (make test installs Debian's postgresql)")
    bindir = os.path.dirname(pg_ctl)
    folder = tempfile.mkdtemp(prefix="specplan-pg-")
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(folder, "data")
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True)  # noqa
    run(os.path.join(bindir, "initdb"), "-D", data, "-A", "trust", "-U", "postgres")
    run(pg_ctl, "-D", data, "-w", "-l", os.path.join(folder, "log"), "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_postgres_study(corpus_dir, postgres_url, tmp_path):
    import optuna

    from planner.search.study import create_study, open_storage

    cache = tmp_path / "cache"
    spec = spec_for(cache, generic=str(corpus_dir / "generic.jsonl"),
                    domains=[str(corpus_dir / "law.jsonl")], trials=4,
                    pretrain_flops=4e9, spec_flops=1e9)
    study = create_study(spec, open_storage(postgres_url, tmp_path))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "planner.cli", "--cache", str(cache), "worker", "--study",
           study.study_name, "--storage", postgres_url]
    workers = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-2000:]
    trials = optuna.load_study(study_name=study.study_name,
                               storage=open_storage(postgres_url, tmp_path)).trials
    states = [t.state.name for t in trials]
    assert all(s in ("COMPLETE", "PRUNED") for s in states)  # none lost or left running
    assert 4 <= len(trials) <= 5  # at most one extra: both workers may start the last one
    defaults = [t for t in trials if t.user_attrs.get("default")]
    assert sorted(t.params["strategy"] for t in defaults) == ["slm", "slm-nopt"]  # each once
    ran_here = sum(int(out.split(":")[1].split()[0]) for out, _ in outputs)
    assert ran_here == len(trials)  # every trial ran in exactly one worker


DDP_SCRIPT = r"""
import json, os, sys, torch, torch.distributed as dist
sys.path.insert(0, os.getcwd())
from planner.core.cost import Ledger
from planner.engine.models import model_shape
from planner.engine.train import TrainConfig, WindowSampler, train
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    dist.init_process_group("gloo")
torch.set_num_threads(1)
shape = model_shape("tiny", vocab_size=64, seq_len=16)
gen = torch.Generator().manual_seed(0)
ids = ((torch.arange(16) + torch.randint(0, 8, (200, 1), generator=gen)) % 8 + 1).long()
losses = []
model = shape.build(seed=0)
cfg = TrainConfig(max_steps=6, batch_size=8, eval_every=2, device="cpu", lr=1e-2, warmup_steps=1)
result = train(model, WindowSampler(ids[:160], 8, 1, seed=0), cfg, seq_len=16,
               flops_per_token=1.0, ledger=Ledger(), phase="generic", valid=ids[160:])
if int(os.environ.get("RANK", "0")) == 0:
    print(json.dumps([h["val_loss"] for h in result.history]))
"""


def one_process_curve(tmp_path) -> tuple[str, str, list[float]]:
    """(the DDP script, the repository root, its validation losses run as one process)."""
    import json

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    single = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    return str(script), root, json.loads(single.stdout.strip().splitlines()[-1])


def test_ddp_on_cpu_matches_one_process(tmp_path):
    import json

    script, root, one = one_process_curve(tmp_path)
    port = free_port()
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(port), str(script)],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert double.returncode == 0, double.stderr[-2000:]
    two = json.loads(double.stdout.strip().splitlines()[-1])
    assert len(one) == len(two) == 3
    assert two == pytest.approx(one, rel=1e-4)


def test_two_node_torchrun_on_localhost_matches_one_process(tmp_path):
    """Two "machines" (torchrun agents with --nnodes 2 and their own --node-rank, one process
    each) rendezvous over TCP, as on two hosts, and follow the one-process loss curve."""
    import json

    script, root, one = one_process_curve(tmp_path)
    port = free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank",
         str(rank), "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port",
         str(port), script],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-2000:]
    two = json.loads(outputs[0][0].strip().splitlines()[-1])  # node 0 holds global rank 0
    assert outputs[1][0].strip() == ""  # node 1's rank printed nothing: it is rank 1
    assert len(one) == len(two) == 3
    assert two == pytest.approx(one, rel=1e-4)


def test_multi_process_worker_runs_each_trial_as_one_ddp_job(corpus_dir, tmp_path):
    """`--gpus-per-trial 2` on CPU: torchrun starts two ranks; rank 0 drives the study."""
    import optuna

    from planner.search.study import create_study, open_storage

    cache, out = tmp_path / "cache", tmp_path / "out"
    spec = spec_for(cache, generic=str(corpus_dir / "generic.jsonl"),
                    domains=[str(corpus_dir / "law.jsonl")], trials=2,
                    pretrain_flops=4e9, spec_flops=1e9)
    study = create_study(spec, open_storage(None, out))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(free_port()), "-m", "planner.cli", "--cache", str(cache), "worker",
         "--study", study.study_name, "--storage", str(out / "study.journal")],
        cwd=root, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, "\n".join(  # rank 0's own lines first: its failure is the cause
        [line for line in proc.stderr.splitlines() if "[rank0]" in line][-40:]
        + proc.stderr.splitlines()[-15:])
    trials = optuna.load_study(study_name=study.study_name,
                               storage=open_storage(None, out)).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:
        assert "cpu x2" in t.user_attrs["devices"]  # both ranks trained, as one DDP job
        assert t.user_attrs["macro_ppl"] > 1
