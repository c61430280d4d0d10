#!/usr/bin/env bash
# Absolute times on a CUDA GPU, in one time-boxed pass: `bench steptime` for the zoo models and
# EfficientNet-Lite0 (its fine-tuning settings), the cached step on ResNet, then the `finetune-long`
# suite's cells seed by seed until the budget runs out (a finished run is kept; a cut one is not).
#
#   scripts/gpu_bench.sh OUT [SECONDS]      # default 480 s in all
#
# Needs frostline importable (PYTHONPATH=. from the repository root is enough), Fashion-MNIST where
# frostline looks for it ($FROSTLINE_SYSTEM_DATA) and the EfficientNet-Lite0 packages. The results
# go under OUT/steptime/<model>/ and OUT/finetune-long/ (a bench folder `--report-only` redraws).
set -uo pipefail
out=${1:?usage: scripts/gpu_bench.sh OUT [SECONDS]}
budget=${2:-480}
end=$((SECONDS + budget))

python3 -c 'import sys, torch
if not torch.cuda.is_available():
    sys.exit("error: no CUDA GPU here; this script measures GPU times only (frostline bench steptime runs on a CPU)")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")' || exit 1

for model in resnet vgg vit efficientnet-lite0; do
  timeout 90 python3 -m frostline bench steptime --model "$model" --device cuda --repeats 25 --no-progress \
    --out "$out/steptime/$model" || echo "steptime $model: failed or cut (rc $?)"
done
timeout 60 python3 -m frostline bench steptime --model resnet --device cuda --repeats 25 --cache --no-progress \
  --out "$out/steptime/resnet-cache" || echo "steptime resnet --cache: failed or cut (rc $?)"

for seed in 0 1 2; do
  left=$((end - SECONDS))
  [ "$left" -gt 60 ] || { echo "budget spent before seed $seed"; break; }
  timeout "$left" python3 -m frostline bench compare --suite finetune-long --out "$out/finetune-long" --no-progress \
    --only-seed "$seed" --only-variant none linear-start0-end0.75+cache smartfrz+cache \
    || echo "finetune-long seed $seed: failed or cut (rc $?)"
done
python3 -m frostline bench compare --suite finetune-long --out "$out/finetune-long" --report-only --no-progress
