"""The Faust application: records, topics, agents, publishing, metrics."""
