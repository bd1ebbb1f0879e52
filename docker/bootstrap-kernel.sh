#!/bin/bash
# The kernel image's entry point. Enterprise Gateway's container launchers (launch_kubernetes.py, launch_docker.py) start the
# image with the launch in its environment: KERNEL_ID, RESPONSE_ADDRESS, PUBLIC_KEY, PORT_RANGE, KERNEL_SPARK_CONTEXT_INIT_MODE
# (EG_-prefixed names as the fallbacks EG's own bootstrap reads). ipymini then reports to EG and serves the kernel.
PORT_RANGE=${PORT_RANGE:-${EG_PORT_RANGE:-0..0}}
RESPONSE_ADDRESS=${RESPONSE_ADDRESS:-${EG_RESPONSE_ADDRESS:-}}
PUBLIC_KEY=${PUBLIC_KEY:-${EG_PUBLIC_KEY:-}}
KERNEL_SPARK_CONTEXT_INIT_MODE=${KERNEL_SPARK_CONTEXT_INIT_MODE:-none}
if [ -z "${KERNEL_ID:-}" ] || [ -z "$RESPONSE_ADDRESS" ] || [ -z "$PUBLIC_KEY" ]; then
  echo "bootstrap-kernel.sh: KERNEL_ID, RESPONSE_ADDRESS and PUBLIC_KEY must be set (Enterprise Gateway's launcher sets them)" >&2
  exit 1
fi
# JPY_PARENT_PID, if the launcher's environment carried it here, names a process outside the container: not one to watch
unset JPY_PARENT_PID
# exec: the kernel is the container's main process, so a stop of the container reaches it as SIGTERM
exec python -m ipymini --kernel-id "$KERNEL_ID" --port-range "$PORT_RANGE" --response-address "$RESPONSE_ADDRESS" \
  --public-key "$PUBLIC_KEY" --spark-context-initialization-mode "$KERNEL_SPARK_CONTEXT_INIT_MODE"
