"""Text data for BADS: instruction JSONL, Hugging Face causal language models, per-source weight reports.

The language-model pieces need the optional extra `pip install 'pyro-dps[text]'` (transformers);
`instructions` and `selection_report` need only the core dependencies (plus a tokenizer object).
"""
from .instructions import (IGNORE_INDEX, EncodedInstructions, InstructionExample, encode, encode_together,
                           example_from_record, pad_to, read_jsonl, read_meta_sets, response_targets)
from .selection_report import markdown_table, source_weight_table, write_jsonl_atomic, write_selected_jsonl

__all__ = ["IGNORE_INDEX", "EncodedInstructions", "InstructionExample", "encode", "encode_together",
           "example_from_record", "markdown_table", "pad_to", "read_jsonl", "read_meta_sets", "response_targets",
           "source_weight_table", "write_jsonl_atomic", "write_selected_jsonl"]
