"""placeholder"""
from transforms.analytics import MarketAnalytics, MarketOutputs
from transforms.anomalies import AnalyzedBars, DetectAnomalies
from transforms.bars import BarCombineFn, BarOutputs, WindowedBars
from transforms.ticks import ParsedTicks, ParseTicks, SourceRecord, Tick
