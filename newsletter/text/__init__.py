"""The text formats every stage shares: author Markdown, plain-text wrapping, addresses and
links, header values. Below input and email; imports only model and errors."""
