"""Integrations of BADS with other training frameworks.

`hf_trainer`: a `transformers.Trainer` that draws the batch's weights exactly given their losses each step and
minimises the weighted loss (needs the optional extra `pip install 'pyro-dps[text]'`). Nothing here is imported
until asked for, so `import pyro_dps.integrations` does not import transformers.
"""
