"""okrstream's runnable processes. Each subpackage is one service or one shared adapter.

Services (command, ingest, relay, processor, query) never import each other; they share
the adapters: settings, eventstore, projectionstore, kafka, auth.
"""
