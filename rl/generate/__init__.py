"""Dataset generation: entry-point code that rolls policies out in envs and writes Minari datasets.

It lives outside ``rl.data`` because it needs envs and networks, and ``rl.data`` must not import
training code (docs/DESIGN.md, the import table). ``python -m rl.data generate ...`` is the CLI.
- ``locomotion``: the D4RL recipe on MuJoCo locomotion (random/medium/expert/medium-expert/medium-replay).
- ``adroit``: D4RL's ``door-cloned`` recipe from the human demonstrations, and the door reward check.
"""
