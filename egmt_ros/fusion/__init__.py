"""egmt_ros.fusion"""
