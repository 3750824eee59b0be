"""The farm tier: several Plancton nodes on one machine, each in a network namespace of its
own with its own Docker Engine, D-Bus with an owner's logind, user and daemon, feeding one
HTCondor pool on a farm network (and, in one test, a Work Queue manager), configured from one
git repository. ``tests/farm/run`` builds the farm, runs the tests in this folder and removes
everything it made.
"""
