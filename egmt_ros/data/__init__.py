"""egmt_ros.data"""
