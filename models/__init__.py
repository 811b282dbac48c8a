"""The domain and learning package: record schemas, parcel facts, the join, history and
stage functions, rules, output records, features, model, training, evaluation, registry and
synthetic data. Pure of Kafka: streams/ builds on it, and it never imports streams/."""
