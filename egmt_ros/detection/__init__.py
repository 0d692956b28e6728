"""egmt_ros.detection"""
