"""Text in, token ids out: everything between a user's corpus and the training batches.

Imports nothing from charlstm.model, charlstm.training or charlstm.infer; the validation
fraction and other settings are passed in. Files in the order the data flows through them:

    corpus.py           finding a corpus: the registry, the built-in builders, downloads
    folders.py          several files and folders as one corpus: which files, in what order
    utf8.py             UTF-8 read in pieces, decoded fast, errors named by byte offset
    vocab.py            the vocabulary: code points <-> token ids, with counts
    encoding.py         a text encoded once into token ids: the cache and its memory map
    folder_encoding.py  a folder encoded as one corpus, the validation split from every file
    batches.py          stateful TBPTT batches: B streams cut into seq_len slices
    split.py            where the validation split starts
    suffix_array.py     a suffix array over token ids; a text's longest copies in it
    copy_index.py       a model's training text indexed for copies, cached beside the tokens
    files.py            atomic file writes (a crash never leaves half a file)
"""
