from .channel_mapping import ChannelMapping

__all__ = ['ChannelMapping']
