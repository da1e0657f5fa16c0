#!/usr/bin/env bash
# The raw commands one deploy of the sample app comes down to, each step timed: the reference
# bench/overhead.py, bench/downtime.py and bench/backup.py measure deployhook against.
#
# Every value arrives as its own argument and is only ever expanded quoted, as one argument of
# a command (never pasted into a command string), so nothing in a branch name or sha can run.
# The sha must be 40 hex digits; the branch must be a valid branch name.
#
# Usage: raw-deploy.sh [--steps checkout,build,backup,rollout,health] OPTIONS
#   checkout  --repo URL --dir DIR --branch NAME --sha SHA    git fetch, then check out exactly SHA in DIR
#   build     --image NAME=DOCKERFILE (repeatable) --tag TAG  docker build of DIR as NAME:SHA and NAME:TAG
#   backup    --db-service S --db-user U --db-name N --backup-dir D
#                                                             compose exec -T S pg_dump | gzip > D/backup_*.sql.gz
#   rollout                                                   docker compose up -d
#   health    --health-url URL [--interval S] [--timeout S]   curl until /healthz says ok with version SHA
# Compose (backup, rollout) needs --project P --compose-file FILE (relative to DIR) [--env-file F];
# the compose file's own variables (ports, image names) come from the environment.
# Prints one line per step run: `step <name> <seconds>`.
set -euo pipefail

steps=checkout,build,backup,rollout,health
repo= dir= branch= sha= tag= project= compose_file= env_file=
db_service= db_user= db_name= backup_dir= health_url=
interval=1 timeout=60
images=()

die() { echo "raw-deploy: $*" >&2; exit 2; }

while (($#)); do
  (($# >= 2)) || die "$1 needs a value"
  case $1 in
    --steps) steps=$2 ;;
    --repo) repo=$2 ;;
    --dir) dir=$2 ;;
    --branch) branch=$2 ;;
    --sha) sha=$2 ;;
    --tag) tag=$2 ;;
    --image) images+=("$2") ;;
    --project) project=$2 ;;
    --compose-file) compose_file=$2 ;;
    --env-file) env_file=$2 ;;
    --db-service) db_service=$2 ;;
    --db-user) db_user=$2 ;;
    --db-name) db_name=$2 ;;
    --backup-dir) backup_dir=$2 ;;
    --health-url) health_url=$2 ;;
    --interval) interval=$2 ;;
    --timeout) timeout=$2 ;;
    *) die "unknown option $1" ;;
  esac
  shift 2
done

need() {
  local name
  for name in "$@"; do
    [[ -n ${!name} ]] || die "--${name//_/-} is required for steps $steps"
  done
}

# A leading '-' would make git or docker read a value as an option.
plain() { [[ $2 != -* ]] || die "$1 must not start with '-': $2"; }

compose() {
  local args=(docker compose -p "$project" -f "$dir/$compose_file")
  [[ -z $env_file ]] || args+=(--env-file "$env_file")
  "${args[@]}" "$@"
}

checkout() {
  need repo dir branch sha
  git check-ref-format --branch "$branch" >/dev/null || die "not a branch name: $branch"
  plain --repo "$repo"
  plain --dir "$dir"
  [[ -d $dir/.git ]] || git clone --quiet --no-checkout -- "$repo" "$dir"
  git -C "$dir" fetch --quiet origin "+refs/heads/$branch:refs/remotes/origin/$branch"
  git -C "$dir" checkout --quiet --force --detach "$sha"
}

build() {
  need dir sha tag
  ((${#images[@]})) || die "--image is required for steps $steps"
  local spec name dockerfile
  for spec in "${images[@]}"; do
    name=${spec%%=*} dockerfile=${spec#*=}
    plain --image "$name"
    docker build --quiet --build-arg "GIT_SHA=$sha" -f "$dir/$dockerfile" -t "$name:$sha" -t "$name:$tag" \
      -- "$dir" >/dev/null
  done
}

backup() {
  need dir project compose_file db_service db_user db_name backup_dir
  mkdir -p -- "$backup_dir"
  compose exec -T "$db_service" pg_dump -U "$db_user" -d "$db_name" \
    | gzip >"$backup_dir/backup_$(date +%Y%m%d_%H%M%S_%N).sql.gz"
}

rollout() {
  need dir project compose_file
  compose up -d
}

health() {
  need health_url sha
  local deadline=$((SECONDS + ${timeout%.*})) body
  until body=$(curl -fsS --max-time 3 -- "$health_url" 2>/dev/null) \
    && [[ $body == *'"status":"ok"'* && $body == *"\"version\":\"$sha\""* ]]; do
    ((SECONDS < deadline)) || { echo "raw-deploy: $health_url not healthy with $sha within ${timeout}s" >&2; exit 1; }
    sleep "$interval"
  done
}

timed() {
  local started=${EPOCHREALTIME/./} elapsed
  "$1"
  elapsed=$((${EPOCHREALTIME/./} - started))
  printf 'step %s %d.%06d\n' "$1" $((elapsed / 1000000)) $((elapsed % 1000000))
}

[[ -z $sha || $sha =~ ^[0-9a-f]{40}$ ]] || die "--sha must be 40 hex digits: $sha"
[[ $interval =~ ^[0-9]+(\.[0-9]+)?$ && $timeout =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--interval and --timeout are seconds"
IFS=, read -ra wanted <<<"$steps"
for step in "${wanted[@]}"; do
  case $step in
    checkout | build | backup | rollout | health) timed "$step" ;;
    *) die "unknown step $step (checkout, build, backup, rollout, health)" ;;
  esac
done
