"""Synaptic plasticity: rule discovery over polynomial rules (`polynomial`, `discover`),
HebbNet (`hebbnet`) and Hebbian memory networks (`hmem`).

Import the module you use directly (`from badgerlab.plasticity import hmem`); H-Mem shares no
code with the rule-discovery modules.
"""
