#!/bin/sh
# Bake an exported model into the image's registry, or leave the registry empty.
#   bake-model.sh DIR NAME   DIR/NAME is an exported .onnx (its .card.json and .spec.json
#                            beside it, as `memberpulse export` writes them)
# Runs `memberpulse model add --promote`, the same command an operator runs: the version
# is checked (checksum, feature schema) and becomes the registry's `current`. No Redis is
# reachable at build time, so the promotion is the registry link only.
set -eu
dir=$1
name=$2
mkdir -p "$MEMBERPULSE_MODEL_REGISTRY"
if [ -f "$dir/$name" ]; then
    memberpulse model add "$dir/$name" --promote
    memberpulse model list
else
    echo "no model baked in ($dir/$name absent): mount a registry at $MEMBERPULSE_MODEL_REGISTRY"
fi
