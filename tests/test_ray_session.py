"""superfan.train.session: an embedded cluster beside another one on the same machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

#: A second embedded cluster (not ``ray.cluster_utils.Cluster``, which records itself as the machine's
#: current cluster, so that our ``ray.init`` would join it).
OTHER_CLUSTER = (
    "import ray, time; ray.init(num_cpus=0, include_dashboard=False); print('up', flush=True); time.sleep(600)"
)


@pytest.mark.slow
def test_an_embedded_clusters_processes_find_their_own_cluster_beside_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's state API without an address (what Train's placement-group cleaner calls in every run) looked
    for any GCS process on the machine and, with a second cluster running, failed with "Found multiple
    active Ray instances" and a traceback in the user's log. The embedded session's processes now ask
    their own."""
    import ray

    from superfan.raycompat import GCS_PORT_ENV
    from superfan.train.session import ray_session

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(GCS_PORT_ENV, raising=False)

    @ray.remote(num_cpus=0)
    class Probe:
        def own_state(self) -> tuple[str | None, str]:
            from ray.util.state import get_actor

            me = ray.get_runtime_context().get_actor_id()
            state = get_actor(me, timeout=30)
            return os.environ.get("RAY_ADDRESS"), state.state if state else "missing"

    other = subprocess.Popen([sys.executable, "-c", OTHER_CLUSTER], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "up"
        with ray_session(num_cpus=1) as attached:
            assert not attached
            address, state = ray.get(Probe.remote().own_state.remote(), timeout=120)
            assert address == ray.get_runtime_context().gcs_address
            assert state == "ALIVE"
    finally:
        os.killpg(other.pid, signal.SIGTERM)
        other.wait(timeout=60)
    assert GCS_PORT_ENV not in os.environ  # the next embedded cluster picks its own port
