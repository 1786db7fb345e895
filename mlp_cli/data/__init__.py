"""Tabular data from file (or generator) to training-ready tensors; callers import the public names from here."""

from mlp_cli.data.prepare import (
    CLASSIFICATION,
    Dataset,
    Preprocessor,
    Split,
    class_labels,
    column_stats,
    fit,
    handle_missing,
    load_dataset,
    load_for_model,
    read_frames,
    split_frames,
    split_indices,
    to_split,
)
from mlp_cli.data.readers import Frame, check_columns, file_kind, header, label_text, load_frame, read_table
