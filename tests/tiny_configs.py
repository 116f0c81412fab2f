"""A scenario small enough to run in a second or two: the CLI and bad-input tests share it."""

TINY = """name = "tiny"
[data]
source = "digits"
noise_rate = 0.3
meta_per_class = 5
test_per_class = 5
[network]
hidden = [8]
[sampler]
kernel = "sgld"
step_size = 1e-4
local_step_size = 0.05
temperature = 0.01
chains = 1
warmup = 20
samples = 4
thin = 2
snapshots = 1
batch_size = 32
check_every = 10
[baselines]
"""
