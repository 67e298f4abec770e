#!/usr/bin/env bash
# The pool demo, offline: `vine pool` runs the real Claude Code CLI against a scripted stand-in
# for the model (examples/standin_model.rs, an HTTP server on 127.0.0.1), so it needs no
# account and no network beyond installing the CLI from npm once (into target/claude-code).
#
# Two workers take five tasks: two related ones (same --meta group) share a Claude session,
# one asks a question and is parked — no process, no model turn — until the answer (given here
# after a few seconds, as a person would) resumes the same session. Then the pool idles for
# 15 s with no Claude process and no model request, and stops. At the end: the sessions with
# what each cost, and the board's status with the spend and the session reuse rate.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo's own board is the project's .vine/, whatever the caller's environment names.
unset VINE_DIR VINE_URL VINE_WORKER WORKER_ID VINE_TASK VINE_POOL VINE_STORE
cargo build --release --quiet --bin vine --example standin_model
bin=$PWD/target/release

echo "== the Claude Code CLI (npm, once, into target/claude-code)"
if ! claude=$(scripts/install-claude-code.sh target/claude-code | tail -n 1); then
    echo "The pool demo needs the Claude Code CLI from npm: install Node.js and npm" >&2
    echo "(sudo apt-get install nodejs npm), then run scripts/demo-pool.sh again." >&2
    exit 1
fi

tmp=$(mktemp -d /tmp/agentvine-pool.XXXXXX)
project=$tmp/project
mkdir -p "$project" "$tmp/home"
"$bin/examples/standin_model" >"$tmp/model.log" &
model=$!
trap 'kill $model 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q ANTHROPIC_BASE_URL "$tmp/model.log" && break; sleep 0.1; done
url=$(sed -n 's/^ANTHROPIC_BASE_URL=//p' "$tmp/model.log")
echo "== the stand-in model: $url (its requests: $tmp/model.log)"

cd "$project"
"$bin/vine" init --claude --hook-command "$bin/vine" >/dev/null
echo "== a project set up by vine init --claude: $project (board in .vine/)"
schema=$("$bin/vine" --json add "Schema first" --instructions "Create the schema." --meta group=db |
    sed -n 's/.*"id":\([0-9]*\).*/\1/p' | head -n 1)
"$bin/vine" add "Migrations" --instructions "Write the migrations." --meta group=db --after "$schema" >/dev/null
"$bin/vine" add "Choose the database" --instructions "[ask] Ask which database to use." >/dev/null
"$bin/vine" add "README section" --instructions "Document the schema." --priority low >/dev/null
"$bin/vine" add "Changelog" --instructions "Note the change." --priority low >/dev/null
"$bin/vine" tasks

# A person answers the question a few seconds after it is asked.
(
    for _ in $(seq 600); do
        q=$("$bin/vine" questions | sed -n 's/^#\([0-9]*\) .*/\1/p' | head -n 1)
        if [ -n "$q" ]; then
            sleep 5
            echo "== a person answers question $q (the parked session is resumed with it)"
            "$bin/vine" answer "$q" "PostgreSQL" >/dev/null
            exit 0
        fi
        sleep 0.5
    done
) &
answerer=$!

echo "== vine pool --workers 2 --max-idle 15s"
PATH="$bin:$PATH" HOME="$tmp/home" CLAUDE_CONFIG_DIR="$tmp/home/.claude" \
    ANTHROPIC_BASE_URL="$url" ANTHROPIC_API_KEY=dummy \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 \
    "$bin/vine" pool --workers 2 --max-idle 15s --claude "$claude"
wait "$answerer" || true

echo
echo "== what the model was asked (one line per request)"
grep '^model' "$tmp/model.log" || true
last=$(grep '^model' "$tmp/model.log" | tail -n 1 | awk '{print $2}')
echo "(the last request came at ${last}; the pool then idled 15 s with no Claude process and no request)"
echo
echo "== vine sessions --all"
"$bin/vine" sessions --all
echo
echo "== vine status"
"$bin/vine" status
echo
echo "The board: $project/.vine; the control room: $bin/vine --dir $project/.vine dashboard --open"
