#!/usr/bin/env bash
# A laptop-sized "cluster": a real S3 server (SeaweedFS) and a Ray head, both on 127.0.0.1.
#
#   cluster/local.sh up       start both (idempotent: a running copy is reported, not duplicated)
#   cluster/local.sh status   say what is running and whether S3 and the dashboard answer
#   cluster/local.sh down     stop only the processes this script started (pid files in .run/)
#
# Why: the sweep, the shards and `superfan pull` talk to S3 and to a Ray cluster in production, so the
# local setup runs the same protocols (S3 API, Ray Jobs API) rather than local shortcuts. `source
# cluster/.env` then points every tool at it, and the same `ray job submit` line works here and on AWS
# or Kubernetes.
#
# Environment overrides (the tests use them so they never collide with a real local cluster):
#   SUPERFAN_CLUSTER_DIR            where .env and .run/ live (default: this directory)
#   SUPERFAN_DASHBOARD_PORT         Ray dashboard / Jobs API port (default 8265)
#   SUPERFAN_RAY_PORT               Ray GCS port (default 6379)
#   SUPERFAN_DASHBOARD_AGENT_PORT   dashboard agent HTTP port (default 52365)
#   SUPERFAN_RAY_CLIENT_PORT        Ray client server port (default 10001)
#   SUPERFAN_S3_PORT                S3 API port (default 8333)
#   SUPERFAN_METRICS_PORT           Prometheus metrics export port (default 8080; superfan's per-epoch
#                                   gauges are ray_superfan_* there; `ray metrics launch-prometheus` scrapes it)
# Ray reserves 10002-19999 for worker processes: keep overrides outside that range.
#   SUPERFAN_RAY_TEMP_DIR           Ray --temp-dir (default .run/ray; keep it short: Ray's socket paths
#                                   must stay under 107 characters)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${SCRIPT_DIR}/.." && pwd)"
CLUSTER_DIR="${SUPERFAN_CLUSTER_DIR:-${SCRIPT_DIR}}"
RUN_DIR="${CLUSTER_DIR}/.run"
ENV_FILE="${CLUSTER_DIR}/.env"
DASHBOARD_PORT="${SUPERFAN_DASHBOARD_PORT:-8265}"
RAY_PORT="${SUPERFAN_RAY_PORT:-6379}"
AGENT_PORT="${SUPERFAN_DASHBOARD_AGENT_PORT:-52365}"
CLIENT_PORT="${SUPERFAN_RAY_CLIENT_PORT:-10001}"
S3_PORT="${SUPERFAN_S3_PORT:-8333}"
METRICS_PORT="${SUPERFAN_METRICS_PORT:-8080}"
RAY_TEMP_DIR="${SUPERFAN_RAY_TEMP_DIR:-${RUN_DIR}/ray}"
BUCKET="superfan"
TOKEN_FILE="${HOME}/.ray/auth_token"

# The project's venv when there is one (a clean clone after `make`), else whatever is on PATH.
if [[ -x "${REPO}/.venv/bin/python" ]]; then
    BIN="${REPO}/.venv/bin/"
else
    BIN=""
fi
PYTHON="${BIN}python"
RAY="${BIN}ray"
if [[ -z "${BIN}" ]] && ! command -v python >/dev/null 2>&1; then
    PYTHON="python3"
fi

export RAY_USAGE_STATS_ENABLED=0

log() { printf 'local.sh: %s\n' "$*"; }
die() { printf 'local.sh: error: %s\n' "$*" >&2; exit 1; }

# alive PIDFILE -> 0 when the pid in the file is a live process (a stale file is removed).
alive() {
    local pidfile="$1" pid
    [[ -f "${pidfile}" ]] || return 1
    pid="$(cat "${pidfile}")"
    if [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null; then
        return 0
    fi
    rm -f "${pidfile}"
    return 1
}

# stop_pid NAME PIDFILE: SIGTERM the process we started (it shuts its children down), wait, then
# SIGKILL whatever is left in its process group (it was started with setsid, so the group is ours).
stop_pid() {
    local name="$1" pidfile="$2" pid i
    if ! alive "${pidfile}"; then
        log "${name}: not running"
        return 0
    fi
    pid="$(cat "${pidfile}")"
    kill -TERM "${pid}" 2>/dev/null || true
    for i in $(seq 1 60); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.5
        if [[ "${i}" -eq 60 ]]; then
            log "${name}: still alive after 30 s, killing"
        fi
    done
    # Leftovers in the group (e.g. a worker that ignored SIGTERM); harmless when the group is gone.
    kill -KILL -- "-${pid}" 2>/dev/null || true
    rm -f "${pidfile}"
    log "${name}: stopped (pid ${pid})"
}

# Credentials are generated once and kept (mode 600), so .env stays valid across down/up.
credentials() {
    local cred="${RUN_DIR}/s3-credentials"
    if [[ ! -f "${cred}" ]]; then
        (umask 077 && "${PYTHON}" - >"${cred}" <<'EOF'
import secrets
print("AK" + secrets.token_hex(8).upper())
print(secrets.token_urlsafe(24))
EOF
        )
    fi
    ACCESS_KEY="$(sed -n 1p "${cred}")"
    SECRET_KEY="$(sed -n 2p "${cred}")"
}

write_env() {
    credentials
    local tmp="${ENV_FILE}.tmp"
    (
        umask 077
        {
            echo "# Written by cluster/local.sh up; \`source\` it to use the local cluster."
            echo "export AWS_ENDPOINT_URL=http://127.0.0.1:${S3_PORT}"
            echo "export AWS_ACCESS_KEY_ID=${ACCESS_KEY}"
            echo "export AWS_SECRET_ACCESS_KEY=${SECRET_KEY}"
            echo "export AWS_DEFAULT_REGION=us-east-1"
            echo "export AWS_EC2_METADATA_DISABLED=true"
            echo "export RAY_ADDRESS=http://127.0.0.1:${DASHBOARD_PORT}"
            if [[ -f "${TOKEN_FILE}" ]]; then
                echo "export RAY_AUTH_MODE=token"
            fi
            echo "export RAY_USAGE_STATS_ENABLED=0"
        } >"${tmp}"
    )
    mv "${tmp}" "${ENV_FILE}"
}

# wait_for NAME PIDFILE SECONDS CHECK...: poll CHECK until it succeeds, the process dies, or time is up.
wait_for() {
    local name="$1" pidfile="$2" seconds="$3" i
    shift 3
    for i in $(seq 1 $((seconds * 2))); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if ! alive "${pidfile}"; then
            die "${name} exited during start-up; see its log in ${RUN_DIR}/"
        fi
        if [[ "${i}" -eq 1 ]]; then
            log "waiting for ${name} ..."
        fi
        sleep 0.5
    done
    die "${name} did not answer within ${seconds} s; see its log in ${RUN_DIR}/"
}

s3_ok() {
    [[ -f "${ENV_FILE}" ]] || return 1
    (
        # shellcheck disable=SC1090
        source "${ENV_FILE}"
        "${PYTHON}" - "${BUCKET}" <<'EOF'
import sys
import boto3
from botocore.config import Config
cfg = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})
boto3.client("s3", config=cfg).head_bucket(Bucket=sys.argv[1])
EOF
    )
}

# The dashboard answers before its job agent does; `ray job submit` needs both ("No available agent to
# submit job" on a busy machine otherwise), so the head is up when the agent answers too.
dashboard_ok() {
    "${PYTHON}" - "${TOKEN_FILE}" "http://127.0.0.1:${DASHBOARD_PORT}/api/version" \
        "http://127.0.0.1:${AGENT_PORT}/api/local_raylet_healthz" <<'EOF'
import os
import sys
import urllib.request
for url in sys.argv[2:]:
    req = urllib.request.Request(url)
    if os.path.isfile(sys.argv[1]):
        with open(sys.argv[1]) as fh:
            req.add_header("Authorization", "Bearer " + fh.read().strip())
    with urllib.request.urlopen(req, timeout=3) as resp:
        if resp.status != 200:
            sys.exit(1)
EOF
}

start_s3() {
    local pidfile="${RUN_DIR}/s3.pid"
    if alive "${pidfile}"; then
        log "S3 (SeaweedFS): already running (pid $(cat "${pidfile}")), not starting another"
        return 0
    fi
    credentials
    write_env
    # setsid: its own process group, so `down` can clean up weed even if the launcher dies first.
    # devtools/ is not installed: the checkout goes on PYTHONPATH, so this works from any directory.
    PYTHONPATH="${REPO}${PYTHONPATH:+:${PYTHONPATH}}" \
        setsid "${PYTHON}" -m devtools.s3server "${RUN_DIR}/s3" --bucket "${BUCKET}" --port "${S3_PORT}" \
        --access-key "${ACCESS_KEY}" --secret-key "${SECRET_KEY}" --env-file "${RUN_DIR}/s3.env" \
        >"${RUN_DIR}/s3.log" 2>&1 </dev/null &
    echo "$!" >"${pidfile}"
    wait_for "S3 (SeaweedFS)" "${pidfile}" 90 s3_ok
    log "S3 (SeaweedFS): up on http://127.0.0.1:${S3_PORT}, bucket ${BUCKET} (pid $(cat "${pidfile}"))"
}

start_ray() {
    local pidfile="${RUN_DIR}/ray.pid"
    if alive "${pidfile}"; then
        log "Ray head: already running (pid $(cat "${pidfile}")), not starting another"
        return 0
    fi
    if [[ -f "${TOKEN_FILE}" ]]; then
        export RAY_AUTH_MODE=token
    fi
    mkdir -p "${RAY_TEMP_DIR}"
    # Every Ray process reads S3 credentials from the environment it started in: they never travel in a
    # job's runtime_env, which the dashboard and `ray list actors --detail` show to anyone.
    credentials
    export AWS_ENDPOINT_URL="http://127.0.0.1:${S3_PORT}" AWS_ACCESS_KEY_ID="${ACCESS_KEY}" \
        AWS_SECRET_ACCESS_KEY="${SECRET_KEY}" AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
    # Job entrypoints say `python ...`: make that the venv's python, the one Ray itself runs in.
    if [[ -n "${BIN}" ]]; then
        export PATH="${BIN%/}:${PATH}"
    fi
    # --block keeps `ray start` in the foreground as the parent of every Ray process: SIGTERM to it shuts
    # down exactly this cluster, where `ray stop` would kill every Ray process on the machine.
    setsid "${RAY}" start --head --block --disable-usage-stats \
        --node-ip-address 127.0.0.1 --port "${RAY_PORT}" \
        --dashboard-host 127.0.0.1 --dashboard-port "${DASHBOARD_PORT}" \
        --dashboard-agent-listen-port "${AGENT_PORT}" --ray-client-server-port "${CLIENT_PORT}" \
        --metrics-export-port "${METRICS_PORT}" --temp-dir "${RAY_TEMP_DIR}" >"${RUN_DIR}/ray.log" 2>&1 </dev/null &
    echo "$!" >"${pidfile}"
    wait_for "Ray head" "${pidfile}" 120 dashboard_ok
    log "Ray head: up, dashboard http://127.0.0.1:${DASHBOARD_PORT}, metrics http://127.0.0.1:${METRICS_PORT}/metrics (pid $(cat "${pidfile}"))"
}

next_steps() {
    cat <<EOF

Local cluster is up. Next:

  source ${ENV_FILE}

  # 1. pack faces into shards on the local S3
  ${BIN}python -m shards pack synthetic 2000 s3://${BUCKET}/shards/train --split train
  ${BIN}python -m shards pack synthetic 256 s3://${BUCKET}/shards/val --split val

  # 2. run the sweep on the Ray cluster (the same command runs on AWS or KubeRay)
  ${BIN}ray job submit --working-dir . -- python sweeps/loss_weights.py --config sweeps/configs/tiny.yaml \\
      --storage s3://${BUCKET}/sweeps --data s3://${BUCKET}/shards/train --val s3://${BUCKET}/shards/val

  # 3. watch it
  open http://127.0.0.1:${DASHBOARD_PORT}        (xdg-open on Linux)

  # 4. fetch the promoted champion and use it
  ${BIN}superfan pull s3://${BUCKET}/sweeps/champions/loss-weights-tiny ./champion
  ${BIN}superfan enhance ./champion photo.jpg --boxes boxes.json -o enhanced/

  cluster/local.sh down    # when done
EOF
}

cmd_up() {
    mkdir -p "${RUN_DIR}"
    start_s3
    write_env
    start_ray
    log "environment written to ${ENV_FILE}"
    next_steps
}

cmd_down() {
    stop_pid "Ray head" "${RUN_DIR}/ray.pid"
    stop_pid "S3 (SeaweedFS)" "${RUN_DIR}/s3.pid"
}

cmd_status() {
    local rc=0 pidfile
    pidfile="${RUN_DIR}/s3.pid"
    if alive "${pidfile}"; then
        if s3_ok; then
            log "S3 (SeaweedFS): running (pid $(cat "${pidfile}")), http://127.0.0.1:${S3_PORT} answers"
        else
            log "S3 (SeaweedFS): running (pid $(cat "${pidfile}")) but not answering"; rc=1
        fi
    else
        log "S3 (SeaweedFS): not running"; rc=1
    fi
    pidfile="${RUN_DIR}/ray.pid"
    if alive "${pidfile}"; then
        if dashboard_ok; then
            log "Ray head: running (pid $(cat "${pidfile}")), dashboard http://127.0.0.1:${DASHBOARD_PORT} answers"
        else
            log "Ray head: running (pid $(cat "${pidfile}")) but the dashboard does not answer"; rc=1
        fi
    else
        log "Ray head: not running"; rc=1
    fi
    if [[ -f "${ENV_FILE}" ]]; then
        log "environment: ${ENV_FILE}"
    fi
    return "${rc}"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
