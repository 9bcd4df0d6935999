"""Run folders and checkpoints, as one import for code written against earlier genzoo versions:
the names now live in small modules of their own, and no core module imports this one.

- ``genzoo.core.atomic``: ``atomic_write``, ``write_json``, ``read_json`` (whole files or none);
- ``genzoo.core.tensors``: safetensors I/O of tensors, module weights and optimizer state;
- ``genzoo.core.artifacts``: a family's artifacts beyond weights;
- ``genzoo.core.run_folder``: the run folder's file names, ``Run`` and ``RunLock``;
- ``genzoo.core.commit``: the checkpoint protocol (``commit``, ``recover``, ``verify``, ``stamp``);
- ``genzoo.core.faults``: the crash tests' kill points (``fault``).
"""
from genzoo.core.artifacts import load_artifacts, save_artifacts
from genzoo.core.atomic import atomic_write, read_json, write_json
from genzoo.core.commit import (CHECKPOINT_FILES, COMMITTED, STAGING, STEP_KEY, commit, file_step,
                                recover, stamp, verify)
from genzoo.core.faults import fault
from genzoo.core.run_folder import (ARTIFACT_JSON, ARTIFACT_TENSORS, CONFIG, EMA_WEIGHTS, LOCK,
                                    METRICS, TRAINER_JSON, TRAINER_TENSORS, WEIGHTS, Run, RunLock)
from genzoo.core.tensors import (PREFIXES, clean_state_dict, load_tensors, load_weights,
                                 optimizer_from_tensors, optimizer_to_tensors, save_tensors,
                                 save_weights)
from genzoo.errors import CheckpointError

__all__ = ["atomic_write", "read_json", "write_json", "PREFIXES", "clean_state_dict",
           "save_tensors", "load_tensors", "save_weights", "load_weights", "optimizer_to_tensors",
           "optimizer_from_tensors", "save_artifacts", "load_artifacts", "WEIGHTS", "EMA_WEIGHTS",
           "TRAINER_TENSORS", "TRAINER_JSON", "ARTIFACT_TENSORS", "ARTIFACT_JSON", "CONFIG",
           "METRICS", "LOCK", "Run", "RunLock", "STAGING", "COMMITTED", "STEP_KEY",
           "CHECKPOINT_FILES", "file_step", "commit", "recover", "verify", "stamp", "fault",
           "CheckpointError"]
