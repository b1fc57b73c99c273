"""jaxmem: how much does a fine-tuning method make a language model memorize?"""
__version__ = "0.1.0"
