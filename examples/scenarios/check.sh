#!/usr/bin/env bash
# Checks every scenario's plan.json against the vine binary: adds it to a fresh temporary
# board, checks the task count, the dependencies and the stored instructions with
# `vine --json tasks`, then plays the scenario's workers with plain vine commands (claim,
# complete, should-continue) and checks that every task was claimed once, only after its
# dependencies completed, and by a worker with the capabilities it requires.
#
#   examples/scenarios/check.sh                 # uses target/debug/vine (build it first)
#   VINE=target/release/vine examples/scenarios/check.sh
#
# Needs bash, jq and cmp. Exits 0 when every check passes; prints what failed otherwise.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
VINE=${VINE:-$root/target/debug/vine}
case $VINE in /*) ;; *) VINE=$PWD/$VINE ;; esac
[ -x "$VINE" ] || { echo "no vine binary at $VINE: run cargo build, or set VINE" >&2; exit 2; }
command -v jq >/dev/null || { echo "check.sh needs jq" >&2; exit 2; }
# The scenario boards are local; a VINE_URL in the environment would send every command away.
unset VINE_URL VINE_WORKER WORKER_ID VINE_DIR

failures=0
fail() { echo "  FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "  ok: $*"; }

# Expected per scenario: "key: dependency keys (sorted)", one line per plan entry, in order.
declare -A expect_deps expect_count workers_of
expect_count[1-single-worker]=3
expect_deps[1-single-worker]='hello:
data:
manifest: data hello'
workers_of[1-single-worker]='worker-1'

expect_count[2-multi-worker]=10
expect_deps[2-multi-worker]='primes:
fizzbuzz:
fibonacci:
roman:
wordcount:
times-table:
mondays:
names:
temperature:
report: fibonacci fizzbuzz mondays names primes roman temperature times-table wordcount'
workers_of[2-multi-worker]='worker-1:python worker-2:python worker-3'

expect_count[3-flask-api]=4
expect_deps[3-flask-api]='structure:
hello: structure
time: hello
tests: hello time'
workers_of[3-flask-api]='worker-1:python worker-2:python'

# Plays one worker: registers with its capabilities, claims and completes until
# should-continue says stop (nothing left to claim for 2 s).
play() {
    local board=$1 spec=$2 id caps=() out code task attempt
    id=${spec%%:*}
    if [ "$spec" != "$id" ]; then caps=(--capability "${spec#*:}"); fi
    "$VINE" --dir "$board" register --worker "$id" "${caps[@]}" >/dev/null
    while :; do
        code=0
        out=$("$VINE" --dir "$board" --json claim --worker "$id") || code=$?
        if [ "$code" -eq 0 ]; then
            task=$(jq -r '.claim.task.id' <<<"$out")
            attempt=$(jq -r '.claim.task.attempts' <<<"$out")
            if [ "$(jq -r '.claim.instructions // "" | length' <<<"$out")" -eq 0 ]; then
                echo "  FAIL: the claim of $task came without its instructions" >&2
                return 1
            fi
            sleep 0.2 # the work
            "$VINE" --dir "$board" complete "$task" --worker "$id" --attempt "$attempt" \
                --result "done by $id" >/dev/null
        elif [ "$code" -eq 3 ]; then
            code=0
            "$VINE" --dir "$board" should-continue --worker "$id" --max-idle 2s >/dev/null || code=$?
            case $code in
                0) sleep 0.1 ;;
                3) return 0 ;; # idle for 2 s with nothing to claim: the worker stops
                *) echo "  FAIL: vine should-continue exited $code" >&2; return 1 ;;
            esac
        else
            echo "  FAIL: vine claim exited $code: $out" >&2
            return 1
        fi
    done
}

for dir in "$here"/*/; do
    name=$(basename "$dir")
    plan=$dir/plan.json
    [ -f "$plan" ] || continue
    echo "== $name"
    if [ -z "${expect_count[$name]:-}" ]; then
        fail "check.sh has no expectations for $name: add them"
        continue
    fi
    board=$(mktemp -d "${TMPDIR:-/tmp}/vine-scenario.XXXXXX")
    trap 'rm -rf "$board"' EXIT
    "$VINE" init "$board" >/dev/null

    # 1. The plan adds, all or nothing.
    if ! added=$("$VINE" --dir "$board" --json add --plan "$plan"); then
        fail "vine add --plan $plan: $added"
        rm -rf "$board"
        continue
    fi
    tasks=$("$VINE" --dir "$board" --json tasks)

    # 2. Task count.
    n=$(jq '.tasks | length' <<<"$tasks")
    if [ "$n" -eq "${expect_count[$name]}" ]; then ok "$n tasks"; else
        fail "$n tasks, expected ${expect_count[$name]}"; fi

    # 3. Dependencies, as plan keys. Tasks get increasing ids in plan order.
    keys=$(jq -r '.[].key' "$plan")
    deps=$(jq -r --argjson keys "$(jq '[.[].key]' "$plan")" '
        (.tasks | sort_by(.id)) as $t
        | ([range(0; $t | length) | {key: ($t[.].id | tostring), value: $keys[.]}] | from_entries) as $k
        | $t[] | "\($k[.id | tostring]):" + ([(.depends_on // [])[] | " " + $k[tostring]] | sort | join(""))
    ' <<<"$tasks")
    if [ "$deps" = "${expect_deps[$name]}" ]; then ok "dependencies as planned"; else
        fail "dependencies differ:"; { diff <(echo "${expect_deps[$name]}") <(echo "$deps") || true; } | sed 's/^/    /'; fi

    # 4. Every task is pending, none blocked, and its instructions are the plan's file, stored on the board.
    jq -e 'all(.tasks[]; .status == "pending" and (.blocked | not))' <<<"$tasks" >/dev/null &&
        ok "all pending, none blocked" || fail "not every task is pending and unblocked"
    i=0
    for key in $keys; do
        from=$(jq -r --arg k "$key" '.[] | select(.key == $k) | .instructions_from' "$plan")
        stored=$(jq -r --argjson i "$i" '.tasks | sort_by(.id) | .[$i].instruction_file' <<<"$tasks")
        if [ -f "$dir/$from" ] && [ -f "$board/$stored" ] && cmp -s "$dir/$from" "$board/$stored"; then :; else
            fail "$key: instructions $from not stored as $stored"; fi
        i=$((i + 1))
    done
    ok "instructions stored for every task"

    # 5. Play the workers, all at once.
    pids=()
    for spec in ${workers_of[$name]}; do
        play "$board" "$spec" & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || fail "a worker stopped with an error"; done

    # 6. Every task completed once, after its dependencies, by a worker that may take it.
    done_tasks=$("$VINE" --dir "$board" --json tasks --all)
    jq -e 'all(.tasks[]; .status == "completed" and .attempts == 1)' <<<"$done_tasks" >/dev/null &&
        ok "every task completed on its first claim" ||
        fail "not every task completed exactly once: $(jq -c '[.tasks[] | {id, status, attempts}]' <<<"$done_tasks")"
    late=$(jq -r '(.tasks | map({key: (.id | tostring), value: .completed_at}) | from_entries) as $done
        | .tasks[] | select(.claimed_at != null) | . as $t
        | (.depends_on // [])[] | select(($done[tostring] // "~") > $t.claimed_at)
        | "\($t.id) claimed before \(.) completed"' <<<"$done_tasks")
    [ -z "$late" ] && ok "no task claimed before its dependencies completed" || fail "$late"
    caps=$(for spec in ${workers_of[$name]}; do
        if [ "$spec" = "${spec%%:*}" ]; then echo "$spec"; else echo "${spec%%:*} ${spec#*:}"; fi
    done)
    wrong=$(jq -r --arg caps "$caps" '
        ($caps | split("\n") | map(split(" ")) | map({key: .[0], value: .[1:]}) | from_entries) as $c
        | .tasks[] | select(.completed_by != null)
        | select(((.requires // []) - ($c[.completed_by] // [])) | length > 0)
        | "\(.id) needs \(.requires) but \(.completed_by) took it"' <<<"$done_tasks")
    [ -z "$wrong" ] && ok "capabilities respected" || fail "$wrong"
    echo "  tasks per worker: $(jq -c '[.tasks[].completed_by // "nobody"] | group_by(.) | map({(.[0]): length}) | add' <<<"$done_tasks")"
    "$VINE" --dir "$board" --json workers | jq -e 'all(.workers[]; .state == "offline")' >/dev/null &&
        ok "every worker went offline after its idle limit" || fail "a worker is not offline"

    rm -rf "$board"
    trap - EXIT
done

if [ "$failures" -eq 0 ]; then
    echo "All scenario plans check out."
else
    echo "$failures check(s) failed."
    exit 1
fi
