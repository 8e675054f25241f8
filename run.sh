#!/usr/bin/env bash
# The published FSS-1000 evaluation (the original ml4ai/mliis run.sh): the released FOMAML*
# EfficientLab checkpoint, fine-tuned on every test task for 59 steps and scored on 5 query
# images each.
#
#   METASEG_DATA_DIR          FSS-1000 shards                 (default: fewshot_shards/)
#   METASEG_CHECKPOINT_DIR    the authors' checkpoint dir     (default: EfficientLab-6-3_FOMAML-star_checkpoint)
#   METASEG_TEST_CLASSES      FSS-1000 test-class list file   (default: the authors' 240 test
#                             classes, shipped as metaseg/resources/fss1000_test_classes.txt)
#
# Extra arguments are appended to the original command line (later flags win), e.g.
#   ./run.sh --eval-samples 1
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

data_dir=${METASEG_DATA_DIR:-fewshot_shards/}
checkpoint_dir=${METASEG_CHECKPOINT_DIR:-EfficientLab-6-3_FOMAML-star_checkpoint}
test_classes=${METASEG_TEST_CLASSES:-$here/metaseg/resources/fss1000_test_classes.txt}

missing=0
if [ ! -d "$data_dir" ]; then
  echo "run.sh: no FSS-1000 shards at '$data_dir': download the authors' shards or convert FSS-1000 with data_tools/fss_1000_image_to_tfrecord.py, then set METASEG_DATA_DIR" >&2
  missing=1
fi
if [ ! -d "$checkpoint_dir" ]; then
  echo "run.sh: no checkpoint directory '$checkpoint_dir': extract EfficientLab-6-3_FOMAML-star_checkpoint.tar.gz or set METASEG_CHECKPOINT_DIR" >&2
  missing=1
fi
if [ ! -f "$test_classes" ]; then
  echo "run.sh: no test-class list '$test_classes': set METASEG_TEST_CLASSES to a file of class names, one per line (unset, it is the shipped FSS-1000 list metaseg/resources/fss1000_test_classes.txt)" >&2
  missing=1
fi
[ "$missing" -eq 0 ] || exit 2

# The original command line, verbatim apart from paths (and --test_tasks_file, since the
# FSS-1000 test split is a documented input here rather than a table inside the code).
exec python "$here/run_metasegnet.py" --fss_1000 --image_size 224 \
    --pretrained \
    --rsd 2 4 --l2 \
    --foml --foml-tail 5 \
    --final_layer_dropout_rate 0.5 --augment --aug_rate 0.5 \
    --sgd --loss_name bce_dice --inner-batch 8 --learning-rate 0.0005 --train-shots 10 --inner-iters 59 --learning_rate_scheduler fixed \
    --meta-iters 50000 --meta-batch 5 \
    --eval-interval 500 --serially_eval_all_test_tasks --eval-samples 2 --shots 5 --eval-batch 8 --eval-iters 59 --transductive \
    --model_name efficientlab  --sgd --meta-step 0.1 --meta-step-final 0.00001 \
    --checkpoint "${checkpoint_dir}" --data-dir "${data_dir}" \
    --test_tasks_file "${test_classes}" "$@"
