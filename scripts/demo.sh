#!/usr/bin/env bash
# The agentvine demo: builds everything, then on a fresh local board a coordinator adds tasks,
# three workers claim and complete them, and the board's status is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin vine --example coordinator --example worker
bin=target/release
board=$(mktemp -d /tmp/agentvine-demo.XXXXXX)
export VINE_DIR="$board"
echo "== board: $board"
"$bin/examples/coordinator" "$board" 60 &
sleep 0.5
for w in w1 w2 w3; do "$bin/examples/worker" "$board" "$w" 2 & done
wait
echo
echo "== vine status"
"$bin/vine" status
echo
echo "== vine tasks"
"$bin/vine" tasks
echo
echo "== vine workers"
"$bin/vine" workers
echo
echo "The board is plain JSON: ls $board; try: VINE_DIR=$board $bin/vine show <id>"
echo
echo "== The control room"
echo "See the board in a browser (it prints the URL; --open opens it):"
echo "  $PWD/$bin/vine --dir $board dashboard --open"
echo "then, in another terminal, a worker asks and waits; answer it on the page:"
echo "  $PWD/$bin/vine --dir $board ask \"Which port?\" --as w1 --wait"

echo
echo "== The Claude Code side"
project=$(mktemp -d /tmp/agentvine-project.XXXXXX)
"$bin/vine" --dir "$board" init --claude "$project" --hook-command "$PWD/$bin/vine"
echo
echo "That project now has the agentvine skill, the hooks and a worker CLAUDE.md. With Claude Code"
echo "installed, start a worker on this board with:"
echo "  cd $project && $PWD/$bin/vine --dir $board worker --worker w4"
echo "and a coordinator with: vine init --claude --role coordinator, then claude. See USAGE.md."

echo
echo "== A pool of headless Claude Code workers, offline (a stand-in plays the model)"
if command -v npm >/dev/null 2>&1 || [ -x target/claude-code/node_modules/.bin/claude ]; then
    scripts/demo-pool.sh
else
    echo "Skipped: it installs the Claude Code CLI from npm. Install Node.js and npm"
    echo "(sudo apt-get install nodejs npm), then run scripts/demo-pool.sh."
fi
