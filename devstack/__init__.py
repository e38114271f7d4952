"""The local system, for the run command and the end-to-end tests.

`stack` starts the parts (the AWS emulator, `wrangler dev`), each on a port of its
own and in its own process group so that it is stopped whole; `provision` creates the
AWS resources and the edge's IAM user in the emulator.
"""
