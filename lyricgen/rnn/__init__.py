"""Recurrent language models: vocab (char/word), model (RNN/LSTM/GRU), data (TBPTT batches),
config + schedule + train (the train-rnn kind), checkpoint (directory layout, loading),
sample (RnnGenerator, batched generation)."""
