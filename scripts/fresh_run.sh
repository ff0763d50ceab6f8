#!/usr/bin/env bash
# Prove README command 1 works on a fresh machine: a fresh clone of this checkout, an empty HOME and
# XDG_CACHE_HOME (so the float32 copy of SmolLM2 is made again), only pip's cache kept warm, no extras
# installed (the command runs scripts/setup.sh itself), and the command taken verbatim from README.md so
# it can never drift from it. Fails if the command fails or any input row is missing from its output.
# Prints the elapsed time of each phase (timestamps on the command's stderr) and the load average.
#
# Usage: bash scripts/fresh_run.sh          (KEEP=1 keeps the temporary folder for inspection)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
pip_cache="${PIP_CACHE_DIR:-$(python3 -m pip cache dir 2>/dev/null || echo "$HOME/.cache/pip")}"
work="$(mktemp -d "${TMPDIR:-/tmp}/promptclf-fresh.XXXXXX")"
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; else echo "fresh run: keeping $work" >&2; fi

# README command 1: the first non-empty line after the "# 1." comment of README.md's first bash block.
cmd="$(awk '/^```bash/{inblk=1; next} /^```/{if (inblk) exit} inblk && /^# 1\./{found=1; next} found && NF{print; exit}' "$repo/README.md")"
if [ -z "$cmd" ]; then
  echo "fresh run: README.md has no '# 1.' command in its first bash block" >&2
  exit 1
fi

# A clone has none of the checkout's ignored files (.venv, build outputs). Uncommitted changes to tracked
# files and new untracked files are copied over it, so a developer tests the tree they have; on CI's clean
# checkout this copies nothing new.
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  git clone -q --no-hardlinks "$repo" "$work/clone"
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
      if [ -e "$f" ]; then
        mkdir -p "$work/clone/$(dirname "$f")" && cp -p "$f" "$work/clone/$f"
      else
        rm -f "$work/clone/$f"
      fi
    done)
else
  mkdir -p "$work/clone" && (cd "$repo" && tar --exclude=./.venv -cf - .) | (cd "$work/clone" && tar -xf -)
fi

mkdir -p "$work/home"
# A newcomer's environment: empty home and caches, none of this machine's model or HF caches. pip's
# configuration (its index) belongs to the machine, not to the home cache, so it is kept.
run_env=(env -u PROMPTCLF_HOME -u HF_HOME -u HF_HUB_CACHE -u TRANSFORMERS_CACHE -u VIRTUAL_ENV -u PYTHONPATH
  -u PROMPTCLF_DEBUG HOME="$work/home" XDG_CACHE_HOME="$work/home/.cache" PIP_CACHE_DIR="$pip_cache")
for conf in "${PIP_CONFIG_FILE:-}" "${XDG_CONFIG_HOME:-$HOME/.config}/pip/pip.conf" "$HOME/.pip/pip.conf"; do
  if [ -n "$conf" ] && [ -f "$conf" ]; then
    run_env+=(PIP_CONFIG_FILE="$conf")
    break
  fi
done

echo "fresh run: clone in $work/clone, HOME=$work/home, pip cache $pip_cache" >&2
echo "fresh run: \$ $cmd" >&2
# Seconds since start, one decimal, in bash alone (EPOCHREALTIME is seconds.microseconds).
start="${EPOCHREALTIME/./}"
since() {
  local t=$(((${EPOCHREALTIME/./} - start) / 100000))
  echo "$((t / 10)).$((t % 10))"
}
set +e
# CPU seconds as well as wall time: on a shared machine the wall time says more about the neighbours.
(cd "$work/clone" && TIMEFORMAT="fresh run: CPU %U s user + %S s sys in %R s" && time "${run_env[@]}" bash -c "$cmd") 2>&1 |
  while IFS= read -r line; do printf '[%6ss] %s\n' "$(since)" "$line"; done
rc=${PIPESTATUS[0]}
set -e
elapsed="$(since)"
read -r l1 l5 l15 _ </proc/loadavg
echo "fresh run: README command 1 took ${elapsed}s on $(nproc) cores (load average $l1 $l5 $l15), exit code $rc" >&2
if [ "$rc" != 0 ]; then
  echo "fresh run: FAILED: README command 1 exited with $rc on a fresh clone" >&2
  exit 1
fi

# No row lost: every input row of the label command is in its output, in order, with a pred_status.
(cd "$work/clone" && "${run_env[@]}" .venv/bin/python - "$cmd" <<'EOF'
import shlex
import sys
from pathlib import Path

from promptclf.data.tables import read_table

cmd = sys.argv[1]
label = next(s for s in cmd.split("&&") if s.split()[:2] == ["promptclf", "label"])
args = shlex.split(label)[2:]
out = Path(args[args.index("-o") + 1] if "-o" in args else args[args.index("--output") + 1])
src = next(Path(a) for a in args if Path(a).suffix in (".csv", ".tsv", ".jsonl", ".parquet", ".xlsx") and Path(a) != out)
if out.suffix == "":
    out = out / "labeled.csv"
inp, res = read_table(src), read_table(out)
statuses = {"ok", "empty", "invalid", "error", "shot"}
problems = []
if len(res) != len(inp):
    problems.append(f"{len(inp)} input rows but {len(res)} output rows")
elif list(res["text"].astype(str)) != list(inp["text"].astype(str)):
    problems.append("output rows are not the input rows in input order")
bad = [i for i, s in enumerate(res.get("pred_status", [""] * len(res))) if str(s) not in statuses]
if bad:
    problems.append(f"{len(bad)} rows without a valid pred_status (first: row {bad[0]})")
if problems:
    sys.exit("fresh run: FAILED: " + "; ".join(problems))
counts = res["pred_status"].value_counts().to_dict()
print(f"fresh run: OK: {len(res)} of {len(inp)} rows in {out}, statuses {counts}", file=sys.stderr)
EOF
)
