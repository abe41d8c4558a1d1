"""OpenAI's Files and Batch APIs, as DeepInfra serves them: a JSONL file of requests answered
within the completion window at the card's batch price."""
