#!/usr/bin/env bash
# The traffic frontier (issue 18): the published DISCO recipes re-run with only --traffic
# changed, then each architecture's points collected into eval/frontier/<arch>.json.
#
#   eval/frontier.sh                      every point below, then the tables
#   eval/frontier.sh resnet50:0.1 ...     only these points (ARCH_SHORT:BUDGET), then the tables
#   eval/frontier.sh --collect            only the tables, from the folders already in $FRONTIER_DIR
#
# Each recipe is its published one in eval/recipes.sh (same --epochs, --finetune-epochs,
# --seed and, where it has one, --params); --traffic is the one thing swept. The budget-0.2
# point of each architecture is its published hub/ folder, not a re-run. Outputs go to
# $FRONTIER_DIR (default /tmp/frontier), never into hub/, each named as a hub folder would be,
# <arch>.digits_t<budget in percent> (budget 0.1: resnet50_disco_2node.digits_t10), so that its
# config's tag and Hugging Face repo id are those of the variant it could be published as (a
# copy into hub/). Wall time per run is appended to $FRONTIER_DIR/times.tsv.
# Run from the repository root with the venv active; set DISCO_ZOO (default `disco-zoo`) and PYTHON (default `python`) to use another install.
set -euo pipefail
DISCO_ZOO=${DISCO_ZOO:-disco-zoo}
PYTHON=${PYTHON:-python}
FRONTIER_DIR=${FRONTIER_DIR:-/tmp/frontier}
BUDGETS="0.1 0.05 0.3 0.03"  # the target first

# short name -> "arch dense_folder published_folder recipe-options-without---traffic"
recipe() {
  case "$1" in
    resnet18) echo "resnet18_disco_2node hub/resnet18.digits hub/resnet18_disco_2node.digits --params 0.3 --epochs 4 --finetune-epochs 3 --seed 0" ;;
    resnet50) echo "resnet50_disco_2node hub/resnet50.digits hub/resnet50_disco_2node.digits --params 0.3 --epochs 3 --finetune-epochs 3 --seed 0" ;;
    *) echo "unknown architecture '$1': use resnet18 or resnet50" >&2; return 2 ;;
  esac
}

run_point() {  # short budget
  local spec arch dense published opts out start
  spec=$(recipe "$1"); read -r arch dense published opts <<<"$spec"
  out="$FRONTIER_DIR/${arch}.digits_t$(awk -v b="$2" 'BEGIN { printf "%g", b * 100 }')"
  mkdir -p "$FRONTIER_DIR"
  start=$(date +%s)
  # shellcheck disable=SC2086  # opts is a list of options
  if $DISCO_ZOO sparsify "$arch" --init "$dense" --traffic "$2" $opts --out "$out"; then
    printf '%s\t%s\t%s s\n' "$arch" "$2" "$(( $(date +%s) - start ))" >>"$FRONTIER_DIR/times.tsv"
  else  # the other points still run; the script fails at the end
    printf '%s\t%s\tfailed\n' "$arch" "$2" >>"$FRONTIER_DIR/times.tsv"; failed=1
  fi
}

collect() {  # short
  local spec arch dense published opts
  spec=$(recipe "$1"); read -r arch dense published opts <<<"$spec"
  local folders=("$published") folder
  shopt -s nullglob
  for folder in "$FRONTIER_DIR/${arch}".digits_t*; do  # a point published to hub/ is read there
    if [[ -d "hub/${folder##*/}" ]]; then folders+=("hub/${folder##*/}"); else folders+=("$folder"); fi
  done
  shopt -u nullglob
  $PYTHON tools/frontier_table.py --dense "$dense" --out "eval/frontier/$arch.json" "${folders[@]}"
}

failed=0
if [[ "${1:-}" != "--collect" ]]; then
  points=("$@")
  if [[ ${#points[@]} -eq 0 ]]; then
    for short in resnet50 resnet18; do for b in $BUDGETS; do points+=("$short:$b"); done; done
  fi
  for point in "${points[@]}"; do run_point "${point%%:*}" "${point#*:}"; done
fi
for short in resnet18 resnet50; do collect "$short"; done
exit "$failed"
