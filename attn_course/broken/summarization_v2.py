"""Broken copies of lesson 14's summarisation code (attn_course.apps.summarization)."""
from ..apps import summarization
from ..pooling import attention_pool


def word_attention_v2(word_scores, h_words, key_padding_mask):
    B, N, T = word_scores.shape
    _, word_weights = attention_pool(word_scores.reshape(B, N * T), h_words.reshape(B, N * T, -1),
                                     key_padding_mask.reshape(B, N * T))          # one softmax per sentence
    word_weights = word_weights.view(B, N, T)                                      # (B*N, T) -> (B, N, T)
    sentence_vectors = (word_weights.unsqueeze(-2) @ h_words).squeeze(-2)          # (B, N, 1, T) @ (B, N, T, D) -> (B, N, D)
    return sentence_vectors, word_weights


word_attention_v2.__doc__ = summarization.word_attention.__doc__
