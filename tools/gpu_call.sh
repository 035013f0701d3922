#!/bin/bash
# The one call a session makes on a lent GPU (this workplace's device tool: `run` with
# carry [".whl"], timeout_s 580), as on 2026-11-30 (benchmarks/results/h200-2026-11-30):
# install the carried WeightWatcher and powerlaw wheels (the machine has no registry; fetch them
# first into .whl/ as the device tool's README says), run tools/gpu_check.py, and bring back its
# summary, logs and records, the records in parts (the tool returns files of at most 16 MiB).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 3
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, scipy, numpy, weightwatcher; print('torch', torch.__version__, 'scipy', scipy.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available(), torch.version.cuda)"
nproc; uptime
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
python3 tools/gpu_check.py --out /tmp/gc --budget "${BUDGET:-540}" > $OUT/main.log 2>&1
echo "gpu_check rc $?"
tail -40 $OUT/main.log
cp /tmp/gc/summary.md $OUT/ 2>/dev/null
cd /tmp/gc || exit 4
ls -la . records records/* 2>/dev/null | head -40
tar czf /tmp/logs.tgz --exclude=records .
cp /tmp/logs.tgz $OUT/logs.tgz
if [ -d records ]; then
  tar cf /tmp/records.tar records
  split -b 15M -d /tmp/records.tar $OUT/records.tar.part-
fi
ls -la $OUT
