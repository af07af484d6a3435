# Sourced by the GPU scripts (gpu_check.sh, gpu_pace.sh, ablation_gpu.sh): installs the wheels
# carried in .whl/ (the GPU image lacks Hydra) and sets the environment every step runs with:
# this checkout's src first on PYTHONPATH, unbuffered output, the data cache in /tmp.
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export REID_ATTN_CACHE=${REID_ATTN_CACHE:-/tmp/reid_attn_cache}
