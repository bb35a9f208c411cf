"""Self-supervised representation learning: CLAPP (`badgerlab.ssl.clapp`) and BYOL
(`badgerlab.ssl.byol`).

The two methods share this package and nothing else: neither module imports the other, so
import the one you use directly (`from badgerlab.ssl import clapp`).
"""
