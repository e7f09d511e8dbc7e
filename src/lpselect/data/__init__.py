"""Reading and writing instruction data, the prompt template, tokenisation with loss masks."""
