"""`qwenocr scan`: the request, input checks, model choice, the page pipeline with its
repetition guard and checkpoints, and the writers of Markdown, JSON and JSONL.
"""
