"""egmt_ros.metrics"""
