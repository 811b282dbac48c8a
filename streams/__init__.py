"""The Faust application and its Kafka side: topics, agents, tables, publishing, serving,
metrics, feed, console and the CLI. The domain it runs is models/, which never imports it."""
