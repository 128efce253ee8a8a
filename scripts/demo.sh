#!/usr/bin/env bash
# Set up (scripts/setup.sh), then show Dockyard end to end as far as it goes today: real
# containers on this machine (namespaces, overlay snapshots, cgroup limits) from a busybox
# image built from Debian's busybox-static, volumes, diff and commit, a push and pull through a
# private registry it starts on 127.0.0.1 (and stops), then the Kubernetes API: CRDs
# generated from the models, examples checked as the API server will, and bad input
# refused.
#
# The node daemon keeps its state in $DOCKYARD_ROOT (default /var/lib/dockyard) and is
# started on first use, as the CLI says; it keeps running afterwards, like dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

step "dockyard version"
dockyard version

step "Build a small image from Debian's busybox-static and import it (docker import)"
python3 scripts/busybox_image.py .venv/cache/busybox-rootfs.tar
dockyard import .venv/cache/busybox-rootfs.tar busybox:latest
dockyard images

step "Run a container: own namespaces, a copy-on-write snapshot, Docker's capabilities"
dockyard rm -f demo-hello demo-hog demo-web >/dev/null 2>&1 || true
dockyard down -f examples/standalone >/dev/null 2>&1 || true
dockyard run --rm --name demo-hello -m 32m --pids-limit 50 busybox \
  sh -c 'echo "hello from $(hostname), I am PID $$"; grep CapEff /proc/self/status; ls /dev'

step "Its exit code is dockyard's; a missing command is 127, as with Docker"
dockyard run --rm busybox sh -c 'exit 3' || echo "exit code: $?"
dockyard run --rm busybox no-such-command || echo "exit code: $?"

step "A container that outgrows its memory limit is OOM-killed, and told so"
dockyard run --name demo-hog -m 16m busybox \
  sh -c 'x=$(head -c 67108864 /dev/zero | tr "\0" a); echo survived' || echo "exit code: $?"
dockyard inspect demo-hog | grep -E '"(exit_code|oom_killed)"'
dockyard rm demo-hog

step "Detached containers: ps, stats, pause, stop, rm"
dockyard run -d --name demo-web --cpus 0.5 busybox sh -c 'while true; do date; sleep 1; done'
sleep 1.5
dockyard ps
dockyard stats demo-web
dockyard pause demo-web && dockyard ps && dockyard unpause demo-web
dockyard logs demo-web | head -2
dockyard exec demo-web sh -c 'echo "exec sees PID 1 = $(cat /proc/1/comm), hostname $(hostname)"'
dockyard stop -t 1 demo-web && dockyard ps -a
dockyard rm demo-web

step "docker diff and docker commit: a container's changes become an image"
dockyard rm -f demo-change >/dev/null 2>&1 || true
dockyard run --name demo-change busybox sh -c 'echo tuned > /etc/motd; rm /bin/true'
dockyard diff demo-change
dockyard commit -m "tuned" -c 'CMD ["cat", "/etc/motd"]' demo-change demo/tuned:1
dockyard rm demo-change

step "Volumes: data that outlives its containers, bind-mounted, exported with checksums"
dockyard rm -f demo-writer >/dev/null 2>&1 || true
dockyard volume rm -f demo-notes demo-notes-copy >/dev/null 2>&1 || true
dockyard run --rm -v demo-notes:/notes busybox sh -c 'date > /notes/first; echo written'
dockyard run --rm --mount type=volume,source=demo-notes,target=/n,readonly busybox \
  sh -c 'cat /n/first; touch /n/x 2>&1 || true'
dockyard run --rm --tmpfs /scratch:size=1m busybox sh -c 'df -h /scratch | tail -1'
dockyard volume export demo-notes -o .venv/cache/demo-notes.tar
dockyard volume import demo-notes-copy -i .venv/cache/demo-notes.tar
dockyard volume ls
dockyard run --rm -v /etc:/host-etc busybox true || echo "(refused: exit code $?)"
dockyard volume rm demo-notes demo-notes-copy

step "Push, pull and run through a private registry (Debian's docker-registry on 127.0.0.1)"
registry_dir=$(mktemp -d /tmp/dockyard-demo-registry.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s/data}}\nhttp: {addr: "127.0.0.1:%s"}\n' \
  "$registry_dir" "$port" > "$registry_dir/config.yml"
docker-registry serve "$registry_dir/config.yml" >"$registry_dir/log" 2>&1 &
registry_pid=$!
trap 'kill "$registry_pid" 2>/dev/null || true; rm -rf "$registry_dir"' EXIT
until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null; do
  sleep 0.1
done
dockyard push demo/tuned:1 "127.0.0.1:$port/demo/tuned:1"
dockyard rmi demo/tuned:1
dockyard pull "127.0.0.1:$port/demo/tuned:1"
dockyard run --rm "127.0.0.1:$port/demo/tuned:1"
dockyard rmi "127.0.0.1:$port/demo/tuned:1"
kill "$registry_pid"; wait "$registry_pid" 2>/dev/null || true

step "Declared, not typed: dockyard up runs the Container manifests of examples/standalone"
dockyard up -f examples/standalone
dockyard up -f examples/standalone      # a second time changes nothing
dockyard ps
dockyard down -f examples/standalone

step "The CRDs are generated from the pydantic models (and are up to date)"
dockyard crd generate --check
ls crds/

step "Every example, checked by the models and by the CRD schema + CEL rules"
dockyard validate examples/

step "What kubectl explain will show: dockyard explain container.spec.resources"
dockyard explain container.spec.resources

step "A bad manifest is refused, naming the field and the fix"
if dockyard validate tests/catalogue/invalid/container-nodename-and-selector.yaml \
     tests/catalogue/invalid/container-memory-bad-suffix.yaml; then
  echo "demo: the bad manifests were accepted" >&2; exit 1
fi

step "Helm and kustomize see the same CRDs"
helm lint --strict charts/dockyard
kubectl kustomize deploy/base | grep -c "kind: CustomResourceDefinition"
echo
echo "demo: done"
