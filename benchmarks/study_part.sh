#!/usr/bin/env bash
# Run one part of the study (config/benchmark.yaml, `parts`) and keep its record.
#
#   bash benchmarks/study_part.sh <part> <run folder> <record folder> [cores]
#
# Runs `snakemake --config part=<part>` from this checkout in <run folder> (resumable: --rerun-incomplete). Parts of
# one dataset may share a run folder: they then share its simulation and embedding (the same bags), and a job an
# earlier part already ran is reused. Then copies the part's per-run tables (summary.tsv, recall.tsv, realism.tsv:
# what `recipe-mil summarize` combines), its comparisons and summary.md to <record folder>/<part>/ with run.tsv: the
# commit, the start of the part's first attempt in this folder, this attempt's start, end, wall seconds and load
# averages, the jobs the part ran in all its attempts and the CPU seconds Snakemake's benchmark files recorded for
# them per rule (jobs of parts run before it in the folder are reused, not counted), and the code hash of every rule
# that makes a run's numbers. The parts of one study must run the same code: the same commit, or commits whose code
# hashes agree; `recipe-mil summarize <record folder>/*/ --out <folder>` then writes the study's summary.
set -euo pipefail
part=$1 run=$(realpath -m "$2") record=$(realpath -m "$3") cores=${4:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$run" "$record/$part"
commit=$(git -C "$repo" rev-parse HEAD)
dirty=$(git -C "$repo" status --porcelain --untracked-files=no -- src workflow config | wc -l)
start=$(date -u +%FT%TZ) t0=$(date +%s) load0=$(cut -d' ' -f1-3 /proc/loadavg)
# the part's first attempt in this folder: a resumed part counts the jobs of all its attempts
marker="$run/.study_part_${part}_start"
[ -f "$marker" ] || echo "$t0" > "$marker"
first=$(cat "$marker")
"$repo/.venv/bin/snakemake" --cores "$cores" -s "$repo/Snakefile" --directory "$run" \
    --configfile "$repo/config/benchmark.yaml" --config part="$part" --rerun-incomplete --keep-going
end=$(date -u +%FT%TZ) t1=$(date +%s) load1=$(cut -d' ' -f1-3 /proc/loadavg)
for name in summary.tsv recall.tsv realism.tsv comparisons.tsv summary.md; do
    cp "$run/results/parts/$part/$name" "$record/$part/$name"
done
(cd "$repo/benchmarks" && "$repo/.venv/bin/python" - "$run" "$record/$part/run.tsv" "$part" "$commit" "$dirty" "$start" "$end" \
    "$((t1 - t0))" "$load0" "$load1" "$cores" "$repo" "$first") <<'EOF'
import sys
from datetime import datetime, timezone
from pathlib import Path

run, out, part, commit, dirty, start, end, wall, load0, load1, cores, repo, first = sys.argv[1:]
sys.path.insert(0, str(Path(sys.argv[0]).parent))
from study_cost import measured_costs  # the cost model's reading of the benchmark files

from recipe_mil.provenance import code_version

jobs = measured_costs(Path(run), since=float(first))  # this part's jobs, not those of parts run before it here
per_rule = jobs.groupby(["family", "kind"]).agg(jobs=("cpu_s", "size"), cpu_s=("cpu_s", "sum")).reset_index()
head = {
    "part": part, "commit": commit, "uncommitted_changes": dirty,
    "first_start": datetime.fromtimestamp(int(first), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "start": start, "end": end, "wall_s": wall,
    "cores": cores, "load_start": load0, "load_end": load1, "jobs": len(jobs), "cpu_s": round(jobs["cpu_s"].sum()),
}
# the hash Snakemake reruns a rule's jobs by (its script and every library module it reaches): parts whose hashes
# agree ran the same code, whatever their commits
for script in ("splits", "scenario_patients", "recipes", "generate", "train_mil", "realism"):
    head[f"code:{script}"] = code_version(Path(repo, "workflow", "scripts", f"{script}.py"), Path(repo, "src", "recipe_mil"))
with open(out, "w") as fh:
    fh.writelines(f"{k}\t{v}\n" for k, v in head.items())
    fh.write("\n")
    per_rule.round(1).to_csv(fh, sep="\t", index=False)
print(f"part {part}: {len(jobs)} jobs, {wall} s wall, {head['cpu_s']} CPU s; record in {out}")
EOF
