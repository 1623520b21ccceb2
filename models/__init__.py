"""Pure model-side code: the event contract, snapshots, features, the network and training.

Nothing here imports faust or redis; torch and transformers are imported only by the
training and network modules, never by the contract or feature code used in serving.
"""
