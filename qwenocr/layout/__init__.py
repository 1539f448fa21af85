"""Layout mode: a page as positioned blocks (the model's document-parsing HTML, read into
`Block`s, mapped to page coordinates and written back out as Markdown).

Imports only the foundation; pages, scan and cli may import it.
"""
