"""Several cards and replicas on one node behind one front door, run by existing components.

HAProxy is the front door (it routes by model and balances replicas), supervisord runs the
processes; this package only turns a fleet file and its cards into their configuration.
"""
